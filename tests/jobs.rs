//! The built-in kinds doing real work through the real server: checksums, thumbnails,
//! HTTP calls, and the files-directory confinement of file jobs.

mod common;

use common::*;
use serde_json::json;
use sha2::Digest;
use spindle::pb;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;

async fn submit_err(server: &TestServer, kind: &str, args: serde_json::Value) -> tonic::Status {
    server
        .client
        .clone()
        .submit(request(kind, args))
        .await
        .unwrap_err()
}

#[tokio::test]
async fn checksum_matches_sha256_and_blake3_with_byte_progress() {
    let server = TestServer::start().await;
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(server.files.path().join("data.bin"), &data).unwrap();

    let job = server
        .submit("file.checksum", json!({"path": "data.bin"}))
        .await;
    let done = server.finish(&job.id).await;
    assert_eq!(state(&done), pb::JobState::Succeeded, "{:?}", done.error);
    let out = result(&done);
    let expected: String = sha2::Sha256::digest(&data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(out["digest"], json!(expected));
    assert_eq!(out["algorithm"], json!("sha256"));
    assert_eq!(out["size"], json!(data.len() as f64));
    let progress = done.progress.unwrap();
    assert_eq!(
        (progress.done, progress.total),
        (data.len() as u64, data.len() as u64)
    );

    let job = server
        .submit(
            "file.checksum",
            json!({"path": "data.bin", "algorithm": "blake3"}),
        )
        .await;
    let out = result(&server.finish(&job.id).await);
    assert_eq!(
        out["digest"],
        json!(blake3::hash(&data).to_hex().to_string())
    );
}

#[tokio::test]
async fn file_jobs_cannot_escape_the_files_directory() {
    let server = TestServer::start().await;
    let outside = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(server.files.path().join("ok.txt"), b"fine").unwrap();
    #[cfg(unix)]
    std::os::unix::fs::symlink(outside.path(), server.files.path().join("sneaky.txt")).unwrap();

    let outside_path = outside.path().to_str().unwrap();
    let cases = [
        (json!({"path": "../etc/passwd"}), Code::PermissionDenied),
        (json!({"path": outside_path}), Code::PermissionDenied),
        (json!({"path": "/etc/passwd"}), Code::PermissionDenied),
        (json!({"path": "sneaky.txt"}), Code::PermissionDenied),
        (json!({"path": "missing.txt"}), Code::InvalidArgument),
        (
            json!({"path": "ok.txt", "algorithm": "md5"}),
            Code::InvalidArgument,
        ),
    ];
    for (args, code) in cases {
        let err = submit_err(&server, "file.checksum", args.clone()).await;
        assert_eq!(err.code(), code, "{args}: {}", err.message());
        assert!(
            err.message().contains("args."),
            "names the field: {}",
            err.message()
        );
    }
    let thumb = json!({"input": "ok.txt", "output": "/tmp/out.png", "width": 10, "height": 10});
    assert_eq!(
        submit_err(&server, "image.thumbnail", thumb).await.code(),
        Code::PermissionDenied
    );
    let listed = server
        .client
        .clone()
        .list_jobs(pb::ListJobsRequest::default())
        .await
        .unwrap();
    assert!(listed.into_inner().jobs.is_empty(), "nothing was queued");
}

#[tokio::test]
async fn thumbnail_fits_the_box_keeping_the_aspect_ratio() {
    let server = TestServer::start().await;
    let source = image::RgbaImage::from_fn(400, 200, |x, y| {
        image::Rgba([(x % 256) as u8, (y % 256) as u8, 90, 255])
    });
    source.save(server.files.path().join("wide.png")).unwrap();

    for (output, format) in [
        ("thumb.png", image::ImageFormat::Png),
        ("thumb.jpg", image::ImageFormat::Jpeg),
    ] {
        let args = json!({"input": "wide.png", "output": output, "width": 100, "height": 100});
        let job = server.submit("image.thumbnail", args).await;
        let done = server.finish(&job.id).await;
        assert_eq!(state(&done), pb::JobState::Succeeded, "{:?}", done.error);
        assert_eq!(
            (
                result(&done)["width"].clone(),
                result(&done)["height"].clone()
            ),
            (json!(100.0), json!(50.0))
        );
        let path = server.files.path().join(output);
        assert_eq!(
            image::ImageReader::open(&path)
                .unwrap()
                .with_guessed_format()
                .unwrap()
                .format(),
            Some(format)
        );
        let written = image::open(&path).unwrap();
        assert_eq!((written.width(), written.height()), (100, 50));
    }
    let bad = json!({"input": "wide.png", "output": "thumb.gif", "width": 100, "height": 100});
    let err = submit_err(&server, "image.thumbnail", bad).await;
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("args.output"));
    let zero = json!({"input": "wide.png", "output": "t.png", "width": 0, "height": 100});
    assert!(
        submit_err(&server, "image.thumbnail", zero)
            .await
            .message()
            .contains("args.width")
    );

    std::fs::write(server.files.path().join("fake.png"), b"not an image").unwrap();
    let job = server
        .submit(
            "image.thumbnail",
            json!({"input": "fake.png", "output": "x.png", "width": 5, "height": 5}),
        )
        .await;
    let done = server.finish(&job.id).await;
    assert_eq!(state(&done), pb::JobState::Failed);
    assert!(!server.files.path().join("x.png").exists());
}

/// A one-shot HTTP server on loopback answering every request with `status` and a body;
/// returns its URL and a handle yielding the raw request it got.
async fn http_stub(status: u16, body: String) -> (String, tokio::task::JoinHandle<String>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut request = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = socket.read(&mut buf).await.unwrap();
            request.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&request);
            if let Some(head_end) = text.find("\r\n\r\n") {
                let length = text
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length: ")
                            .map(|v| v.trim().parse::<usize>().unwrap())
                    })
                    .unwrap_or(0);
                if request.len() >= head_end + 4 + length {
                    break;
                }
            }
            if n == 0 {
                break;
            }
        }
        let response = format!(
            "HTTP/1.1 {status} X\r\ncontent-length: {}\r\nx-stub: yes\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        socket.write_all(response.as_bytes()).await.unwrap();
        String::from_utf8_lossy(&request).into_owned()
    });
    (url, task)
}

/// A server whose http.request may reach 127.0.0.1, where the stubs listen.
async fn server_allowing_loopback() -> TestServer {
    let allow = vec!["127.0.0.1".parse().unwrap()];
    TestServer::start_with(
        |c| c.http.egress = spindle::jobs::egress::EgressPolicy::new(allow),
        |s| s,
    )
    .await
}

#[tokio::test]
async fn http_request_records_status_headers_and_a_bounded_body() {
    let server = server_allowing_loopback().await;
    let (url, stub) = http_stub(201, "y".repeat(100_000)).await;
    let args =
        json!({"url": url, "method": "post", "headers": {"x-token": "abc"}, "body": "{\"a\":1}"});
    let job = server.submit("http.request", args).await;
    let done = server.finish(&job.id).await;
    assert_eq!(state(&done), pb::JobState::Succeeded, "{:?}", done.error);
    let out = result(&done);
    assert_eq!(out["status"], json!(201.0));
    assert_eq!(out["headers"]["x-stub"], json!("yes"));
    assert_eq!(
        out["body"].as_str().unwrap().len(),
        spindle::jobs::http::MAX_BODY
    );
    assert_eq!(out["body_truncated"], json!(true));
    let seen = stub.await.unwrap();
    assert!(seen.starts_with("POST /hook"), "{seen}");
    assert!(
        seen.contains("x-token: abc") && seen.ends_with("{\"a\":1}"),
        "{seen}"
    );
    // The handler got the header's value; no answer shows it again.
    let args = |job: &pb::Job| {
        let args = job.args.clone().expect("args");
        serde_json::Value::Object(spindle::pb::json::struct_to_json(args, "args").unwrap())
    };
    let shown = |job: &pb::Job| args(job)["headers"].clone();
    assert_eq!(shown(&done), json!({"x-token": "[redacted]"}));
    let listed = (server.client.clone())
        .list_jobs(pb::ListJobsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .jobs;
    assert_eq!(shown(&listed[0]), json!({"x-token": "[redacted]"}));
    assert_eq!(args(&done)["url"], json!(url));
}

#[tokio::test]
async fn http_request_fails_on_an_unexpected_status_or_no_server() {
    let server = server_allowing_loopback().await;
    let (url, _stub) = http_stub(500, "oops".into()).await;
    let req = request_once("http.request", json!({ "url": url }));
    let done = server.finish(&server.submit_request(req).await.id).await;
    assert_eq!(state(&done), pb::JobState::Failed);
    let error = done.error.unwrap();
    assert!(error.message.contains("500"), "{}", error.message);
    assert_eq!(
        error.kind,
        pb::ErrorKind::Handler as i32,
        "5xx is retryable"
    );

    let (url, _stub) = http_stub(404, "gone".into()).await;
    let job = server.submit("http.request", json!({ "url": url })).await;
    let done = server.finish(&job.id).await;
    assert_eq!(
        (state(&done), done.attempt),
        (pb::JobState::Failed, 1),
        "4xx is not retried"
    );
    assert_eq!(done.error.unwrap().kind, pb::ErrorKind::Permanent as i32);

    let (url, _stub) = http_stub(204, String::new()).await;
    let job = server
        .submit("http.request", json!({"url": url, "expect_status": 204}))
        .await;
    assert_eq!(
        state(&server.finish(&job.id).await),
        pb::JobState::Succeeded
    );

    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", closed.local_addr().unwrap());
    drop(closed);
    let req = request_once("http.request", json!({"url": url, "timeout": 5}));
    let job = server.submit_request(req).await;
    let done = server.finish(&job.id).await;
    assert_eq!(state(&done), pb::JobState::Failed);

    for (args, field) in [
        (json!({"url": "ftp://x"}), "args.url"),
        (json!({"url": "not a url"}), "args.url"),
        (
            json!({"url": "http://x", "method": "BAD METHOD"}),
            "args.method",
        ),
        (json!({"url": "http://x", "timeout": 0}), "args.timeout"),
        (json!({"url": "http://x", "timeout": 301}), "args.timeout"),
        (
            json!({"url": "http://x", "expect_status": 42}),
            "args.expect_status",
        ),
    ] {
        let err = submit_err(&server, "http.request", args).await;
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(err.message().contains(field), "{}", err.message());
    }
}

#[tokio::test]
async fn demo_cpu_reports_progress_and_a_digest() {
    let server = TestServer::start().await;
    let job = server.submit("demo.cpu", json!({"rounds": 50_000})).await;
    let done = server.finish(&job.id).await;
    assert_eq!(state(&done), pb::JobState::Succeeded);
    let expected = spindle::jobs::cpu::burn(50_000, |_| Ok::<(), ()>(())).unwrap();
    assert_eq!(result(&done)["digest"], json!(expected));
    assert_eq!(done.progress.unwrap().done, 50_000);
}
