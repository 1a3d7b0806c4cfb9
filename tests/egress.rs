//! http.request cannot reach the service's own network: every loopback form, private and
//! metadata addresses, names that resolve to loopback, and redirects into it are refused
//! by the egress policy, while a live local server that would answer 200 waits on each
//! one, so a refusal is really the policy's. Traffic stays on loopback: the private and
//! metadata addresses are refused at Submit, before any connection.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::*;
use serde_json::json;
use spindle::jobs::egress::EgressPolicy;
use spindle::pb;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;

/// A local HTTP server answering every request 200 (or a redirect to `location`), counting
/// the requests it got.
async fn web(bind: &str, location: Option<String>) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind(bind).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            counted.fetch_add(1, Ordering::SeqCst);
            let location = location.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = socket.read(&mut buf).await;
                let head = match location {
                    Some(to) => format!("HTTP/1.1 302 Found\r\nlocation: {to}\r\n"),
                    None => "HTTP/1.1 200 OK\r\n".to_string(),
                };
                let reply = format!("{head}content-length: 2\r\nconnection: close\r\n\r\nok");
                let _ = socket.write_all(reply.as_bytes()).await;
            });
        }
    });
    (addr, hits)
}

fn refused_at_submit(status: &tonic::Status) -> bool {
    status.code() == Code::InvalidArgument
        && status.message().contains("args.url")
        && status.message().contains("egress policy")
}

#[tokio::test(flavor = "multi_thread")]
async fn every_loopback_form_is_refused_at_submit_with_a_server_waiting_behind_it() {
    let server = TestServer::start().await;
    let (v4, hits) = web("127.0.0.1:0", None).await;
    let port = v4.port();
    let v6 = match tokio::net::TcpListener::bind("[::1]:0").await {
        Ok(probe) => {
            drop(probe);
            Some(web("[::1]:0", None).await)
        }
        Err(_) => None,
    };
    let mut urls: Vec<String> = [
        "127.0.0.1",
        "localhost",
        "0.0.0.0",
        "2130706433",
        "127.1",
        "0x7f000001",
        "017700000001",
        "[::ffff:127.0.0.1]",
        "LOCALHOST.",
    ]
    .iter()
    .map(|host| format!("http://{host}:{port}/"))
    .collect();
    if let Some((addr, _)) = &v6 {
        urls.push(format!("http://[::1]:{}/", addr.port()));
    }
    // Never connected to: refused before any packet leaves.
    urls.extend(
        [
            "169.254.169.254",
            "10.0.0.1",
            "192.168.0.1",
            "172.16.0.1",
            "100.64.0.1",
            "[fd00::1]",
        ]
        .iter()
        .map(|host| format!("http://{host}/")),
    );
    let mut client = server.client.clone();
    for url in &urls {
        let refused = client
            .submit(request("http.request", json!({ "url": url })))
            .await
            .expect_err(url);
        assert!(refused_at_submit(&refused), "{url}: {refused:?}");
    }
    assert_eq!(hits.load(Ordering::SeqCst), 0);
    if let Some((_, hits)) = v6 {
        assert_eq!(hits.load(Ordering::SeqCst), 0);
    }

    // The same server is reachable once the operator allows it.
    let allow = vec![format!("127.0.0.1:{port}").parse().unwrap()];
    let open = TestServer::start_with(|c| c.http.egress = EgressPolicy::new(allow), |s| s).await;
    let job = open
        .submit(
            "http.request",
            json!({ "url": format!("http://127.0.0.1:{port}/") }),
        )
        .await;
    assert_eq!(state(&open.finish(&job.id).await), pb::JobState::Succeeded);
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_redirect_into_a_refused_address_fails_the_job_permanently() {
    let (inner, inner_hits) = web("127.0.0.2:0", None).await;
    let (outer, outer_hits) = web("127.0.0.1:0", Some(format!("http://{inner}/"))).await;
    let allow = vec![format!("127.0.0.1:{}", outer.port()).parse().unwrap()];
    let server = TestServer::start_with(|c| c.http.egress = EgressPolicy::new(allow), |s| s).await;
    let job = server
        .submit("http.request", json!({ "url": format!("http://{outer}/") }))
        .await;
    let done = server.finish(&job.id).await;
    assert_eq!((state(&done), done.attempt), (pb::JobState::Failed, 1));
    let error = done.error.expect("error");
    assert_eq!(error.kind, pb::ErrorKind::Permanent as i32);
    assert!(
        error.message.contains("egress policy refused 127.0.0.2"),
        "{}",
        error.message
    );
    assert_eq!(outer_hits.load(Ordering::SeqCst), 1);
    assert_eq!(inner_hits.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_name_that_resolves_to_loopback_is_refused_at_connect_time() {
    // This machine's own name resolves to loopback in /etc/hosts; it is no plain loopback
    // name, so only the check of resolved addresses can refuse it.
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let name = name.trim().to_string();
    let resolved: Vec<SocketAddr> = tokio::net::lookup_host((name.as_str(), 0))
        .await
        .map(|a| a.collect())
        .unwrap_or_default();
    let loopback = !resolved.is_empty() && resolved.iter().all(|a| a.ip().is_loopback());
    let need = format!("a host name ({name}) that resolves to loopback only");
    if !outside_tool(
        loopback,
        "a_name_that_resolves_to_loopback_is_refused",
        &need,
    ) {
        return;
    }
    let (addr, hits) = web("127.0.0.1:0", None).await;
    let server = TestServer::start().await;
    let url = format!("http://{name}:{}/", addr.port());
    let job = server.submit("http.request", json!({ "url": url })).await;
    let done = server.finish(&job.id).await;
    assert_eq!((state(&done), done.attempt), (pb::JobState::Failed, 1));
    let error = done.error.expect("error");
    assert_eq!(
        error.kind,
        pb::ErrorKind::Permanent as i32,
        "{}",
        error.message
    );
    assert!(
        error.message.contains("egress policy refused"),
        "{}",
        error.message
    );
    assert_eq!(hits.load(Ordering::SeqCst), 0);
}
