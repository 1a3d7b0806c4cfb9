//! W8: no-op jobs of a remote kind end to end, through worker processes: one minimal Rust
//! worker (`spindle bench-worker`: the protocol's own cost), then one and four Python
//! worker processes (the SDK, `python -m spindle_client.bench_worker`). Each figure is
//! first submit to last completion of N jobs submitted in batches of 1,000, with the
//! workers connected (and counted by ListKinds) before the clock starts.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use super::Sizes;
use super::load::{drive, err};
use super::target::Target;
use super::worker::KIND;
use super::workloads::{Figure, figure, stats, wait_succeeded};
use crate::pb;
use crate::pb::job_service_client::JobServiceClient;

/// The Python client package the Python workers run from: SPINDLE_PYTHON_CLIENT, else
/// this checkout's clients/python.
fn python_client() -> PathBuf {
    std::env::var_os("SPINDLE_PYTHON_CLIENT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("clients/python"))
}

fn python() -> String {
    std::env::var("SPINDLE_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// Whether the Python workers can run here (python with grpcio and the client package).
async fn python_ready() -> bool {
    let check = Command::new(python())
        .args(["-c", "import grpc, grpc_tools, spindle_client"])
        .env("PYTHONPATH", python_client())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await;
    check.is_ok_and(|s| s.success())
}

/// Starts one worker process and waits for its "ready" line.
async fn start(mut command: Command) -> Result<Child, String> {
    command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    let mut child = command
        .spawn()
        .map_err(|e| format!("cannot start a worker: {e}"))?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let ready = tokio::time::timeout(Duration::from_secs(60), lines.next_line()).await;
    match ready {
        Ok(Ok(Some(line))) if line.trim() == "ready" => Ok(child),
        other => Err(format!("a worker did not get ready: {other:?}")),
    }
}

async fn rust_workers(url: &str, n: usize) -> Result<Vec<Child>, String> {
    let exe = std::env::current_exe().map_err(err)?;
    let mut children = Vec::new();
    for i in 0..n {
        let mut command = Command::new(&exe);
        command.args(["bench-worker", "--url", url, "--id", &format!("rust-{i}")]);
        children.push(start(command).await?);
    }
    Ok(children)
}

async fn python_workers(url: &str, n: usize) -> Result<Vec<Child>, String> {
    let mut children = Vec::new();
    for i in 0..n {
        let mut command = Command::new(python());
        command
            .args([
                "-m",
                "spindle_client.bench_worker",
                url,
                &format!("py-{i}"),
                "128",
            ])
            .env("PYTHONPATH", python_client());
        children.push(start(command).await?);
    }
    Ok(children)
}

/// Waits until ListKinds counts `n` workers of W8's kind.
async fn wait_workers(
    client: &mut JobServiceClient<tonic::transport::Channel>,
    n: u32,
) -> Result<(), String> {
    let give_up = Instant::now() + Duration::from_secs(60);
    loop {
        let kinds = client
            .list_kinds(pb::ListKindsRequest::default())
            .await
            .map_err(err)?;
        let serving = kinds
            .into_inner()
            .kinds
            .iter()
            .find(|k| k.name == KIND)
            .map_or(0, |k| k.workers);
        if serving == n {
            return Ok(());
        }
        if Instant::now() > give_up {
            return Err(format!("{serving} of {n} workers connected after 60 s"));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Jobs per second, first submit to last completion, for `jobs` jobs in batches of 1,000.
async fn end_to_end(target: &Target, jobs: usize, workers: u32) -> Result<f64, String> {
    let mut client = target.jobs().await.map_err(err)?;
    wait_workers(&mut client, workers).await?;
    let before = stats(&mut client).await?.succeeded_total;
    let channels = target.connect(2).await.map_err(err)?;
    let batch = pb::SubmitBatchRequest {
        namespace: String::new(),
        jobs: vec![
            pb::SubmitRequest {
                kind: KIND.into(),
                args: Some(prost_types::Struct::default()),
                ..Default::default()
            };
            1000
        ],
    };
    let calls = jobs.div_ceil(1000);
    let started = Instant::now();
    drive(&channels, 2, calls, move |channel| {
        let batch = batch.clone();
        async move {
            JobServiceClient::new(channel).submit_batch(batch).await?;
            Ok(())
        }
    })
    .await?;
    wait_succeeded(&mut client, before + (calls * 1000) as u64).await?;
    Ok((calls * 1000) as f64 / started.elapsed().as_secs_f64())
}

/// W8: remote no-op jobs end to end through a Rust worker, one and four Python workers.
pub async fn w8(target: &Target, sizes: &Sizes) -> Result<Vec<Figure>, String> {
    let mut figures = Vec::new();
    let workers = rust_workers(&target.url, 1).await?;
    let rate = end_to_end(target, sizes.w8_jobs, 1).await;
    drop(workers);
    figures.push(figure(
        "W8",
        "remote end to end, 1 Rust worker process",
        "jobs/s",
        rate?,
    ));
    if !python_ready().await {
        if std::env::var_os("CI").is_some() {
            return Err("W8 needs python3 with grpcio and grpcio-tools, and CI is set".into());
        }
        eprintln!(
            "W8: SKIPPED the Python workers: needs python3 with grpcio and grpcio-tools (pip install -r clients/python/requirements-test.txt)"
        );
        return Ok(figures);
    }
    for n in [1, 4] {
        // A fresh kind count: the previous workers have left (their processes are gone).
        let workers = python_workers(&target.url, n).await?;
        let rate = end_to_end(target, sizes.w8_jobs, n as u32).await;
        drop(workers);
        let what = format!(
            "remote end to end, {n} Python worker process{}",
            if n == 1 { "" } else { "es" }
        );
        figures.push(figure("W8", what, "jobs/s", rate?));
    }
    Ok(figures)
}
