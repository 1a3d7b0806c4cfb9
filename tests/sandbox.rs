//! The files directory holds against a hostile file system: paths swapped for symlinks
//! between check and open, FIFOs, hard links out, symlinks at temporary names, and images
//! that declare more pixels than memory should hold.

mod common;

use std::os::unix::fs::OpenOptionsExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::*;
use serde_json::json;
use sha2::Digest;
use spindle::pb;
use tonic::Code;

fn sha256(bytes: &[u8]) -> String {
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A Submit that waits half a second before it runs, so the test can change the file
/// system between the check at Submit and the run.
fn delayed(kind: &str, args: serde_json::Value) -> pb::SubmitRequest {
    pb::SubmitRequest {
        delay: Some(prost_types::Duration {
            seconds: 0,
            nanos: 500_000_000,
        }),
        ..request_once(kind, args)
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_swapped_with_a_symlink_out_is_never_read() {
    let server = TestServer::start().await;
    let outside = tempfile::tempdir().unwrap();
    let secret = outside.path().join("secret");
    std::fs::write(&secret, b"secret outside the files directory").unwrap();
    let files = server.files.path().to_path_buf();
    std::fs::write(files.join("a.txt"), b"inside").unwrap();
    std::os::unix::fs::symlink(&secret, files.join("b.txt")).unwrap();

    // Swap a.txt and the symlink b.txt, atomically and over and over.
    let stop = Arc::new(AtomicBool::new(false));
    let swapping = {
        let (stop, files) = (stop.clone(), files.clone());
        std::thread::spawn(move || {
            let dir = std::fs::File::open(&files).unwrap();
            let mut swaps = 0u64;
            while !stop.load(Ordering::Relaxed) {
                rustix::fs::renameat_with(
                    &dir,
                    "a.txt",
                    &dir,
                    "b.txt",
                    rustix::fs::RenameFlags::EXCHANGE,
                )
                .expect("renameat2 exchange");
                swaps += 1;
            }
            swaps
        })
    };
    let mut client = server.client.clone();
    let mut jobs = Vec::new();
    for _ in 0..600 {
        if let Ok(r) = client
            .submit(request_once("file.checksum", json!({"path": "a.txt"})))
            .await
        {
            jobs.push(r.into_inner().job.unwrap().id);
        }
    }
    let mut read_inside = 0;
    for id in &jobs {
        let done = server.finish(id).await;
        if state(&done) == pb::JobState::Succeeded {
            assert_eq!(
                result(&done)["digest"],
                json!(sha256(b"inside")),
                "read through the symlink"
            );
            read_inside += 1;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let swaps = swapping.join().unwrap();
    eprintln!(
        "{} accepted, {read_inside} read the file inside, {swaps} swaps",
        jobs.len()
    );
    assert!(!jobs.is_empty() && swaps > 1000);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fifo_swapped_in_fails_the_job_at_once_instead_of_hanging_a_cpu_thread() {
    let server = TestServer::start_with(|c| c.engine.cpu_threads = 2, |s| s).await;
    let files = server.files.path().to_path_buf();
    std::fs::write(files.join("data.bin"), b"data").unwrap();
    let fifo = files.join("pipe");
    rustix::fs::mkfifoat(
        rustix::fs::CWD,
        &fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
    )
    .unwrap();

    // Swap the file and the FIFO over and over: some checks see the file, some opens the
    // FIFO. An open that blocks would hold a CPU thread until someone writes to the FIFO.
    let stop = Arc::new(AtomicBool::new(false));
    let swapping = {
        let (stop, files) = (stop.clone(), files.clone());
        std::thread::spawn(move || {
            let dir = std::fs::File::open(&files).unwrap();
            while !stop.load(Ordering::Relaxed) {
                let exchange = rustix::fs::RenameFlags::EXCHANGE;
                rustix::fs::renameat_with(&dir, "data.bin", &dir, "pipe", exchange).unwrap();
            }
        })
    };
    let mut client = server.client.clone();
    let mut jobs = Vec::new();
    for _ in 0..300 {
        let req = request_once("file.checksum", json!({"path": "data.bin"}));
        if let Ok(r) = client.submit(req).await {
            jobs.push(r.into_inner().job.unwrap().id);
        }
    }
    let mut refused = 0;
    for id in &jobs {
        let done = tokio::time::timeout(Duration::from_secs(20), server.finish(id))
            .await
            .expect("every job ends instead of blocking in open()");
        if state(&done) == pb::JobState::Failed {
            let error = done.error.expect("error").message;
            assert!(error.contains("not a regular file"), "{error}");
            refused += 1;
        }
    }
    stop.store(true, Ordering::Relaxed);
    swapping.join().unwrap();
    eprintln!(
        "{} accepted, {refused} met the FIFO at run time",
        jobs.len()
    );
    // Unblock any reader the old behaviour left stuck, so the server can stop.
    let _ = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc_o_nonblock())
        .open(&fifo);
}

/// O_NONBLOCK, for opening the FIFO's write end without waiting for a reader.
fn libc_o_nonblock() -> i32 {
    rustix::fs::OFlags::NONBLOCK.bits() as i32
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hard_link_to_a_file_outside_is_refused() {
    let server = TestServer::start().await;
    // The link must be on the same file system as its target: both under the files dir's
    // parent would be ideal, but a sibling temp dir of the same tmpfs does it too.
    let outside = tempfile::tempdir_in(server.files.path().parent().unwrap()).unwrap();
    let secret = outside.path().join("secret");
    std::fs::write(&secret, b"secret").unwrap();
    std::fs::hard_link(&secret, server.files.path().join("linked")).unwrap();
    let refused = server
        .client
        .clone()
        .submit(request("file.checksum", json!({"path": "linked"})))
        .await
        .expect_err("a hard link out is refused");
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    assert!(refused.message().contains("hard links"), "{refused:?}");
}

/// A 1x1 grey PNG (one byte a pixel), then its header changed to declare `width` x `height` (CRC fixed up).
fn png_declaring(width: u32, height: u32) -> Vec<u8> {
    let mut png = Vec::new();
    let pixel = image::GrayImage::from_pixel(1, 1, image::Luma([7]));
    pixel
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    // Signature (8), IHDR length (4), "IHDR" (4), width, height, 5 more bytes, CRC.
    png[16..20].copy_from_slice(&width.to_be_bytes());
    png[20..24].copy_from_slice(&height.to_be_bytes());
    let crc = crc32(&png[12..29]);
    png[29..33].copy_from_slice(&crc.to_be_bytes());
    png
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[tokio::test(flavor = "multi_thread")]
async fn an_image_declaring_too_many_pixels_is_refused_before_it_is_allocated() {
    let server = TestServer::start().await;
    // 400 MB of grey pixels: under the image crate's own default limit (512 MiB).
    std::fs::write(
        server.files.path().join("huge.png"),
        png_declaring(20_000, 20_000),
    )
    .unwrap();
    let args = json!({"input": "huge.png", "output": "t.png", "width": 64, "height": 64});
    let job = server
        .submit_request(request_once("image.thumbnail", args))
        .await;
    let done = server.finish(&job.id).await;
    assert_eq!(state(&done), pb::JobState::Failed);
    let error = done.error.expect("error").message;
    assert!(
        error.contains("limit"),
        "refused for its size, not for its data: {error}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_symlink_at_the_temporary_name_is_never_followed() {
    let server = TestServer::start().await;
    let files = server.files.path();
    let source = image::RgbImage::from_pixel(40, 20, image::Rgb([200, 10, 10]));
    source.save(files.join("in.png")).unwrap();
    let outside = tempfile::tempdir().unwrap();
    let target = outside.path().join("planted.png");
    let args = json!({"input": "in.png", "output": "out.png", "width": 10, "height": 10});
    let job = server
        .submit_request(delayed("image.thumbnail", args))
        .await;
    // The name the temporary file used to take, predictable from the job id.
    std::os::unix::fs::symlink(&target, files.join(format!("out.partial-{}", job.id))).unwrap();
    let done = server.finish(&job.id).await;
    assert_eq!(state(&done), pb::JobState::Succeeded, "{:?}", done.error);
    assert!(
        !target.exists(),
        "a PNG was written outside the files directory"
    );
    let written = image::open(files.join("out.png")).unwrap();
    assert_eq!((written.width(), written.height()), (10, 5));
}
