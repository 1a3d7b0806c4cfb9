//! W6's client and its limit, each in a process of its own, so no measured call shares a
//! runtime (or a process) with the server it measures:
//! - the probe (`spindle bench-probe`, hidden): sequential calls, one at a time (on the
//!   binary's own tokio runtime), as a simple client in any language makes them; it
//!   prints the percentiles as one JSON line;
//! - the limit (`spindle bench-echo`, hidden): a bare tonic server with only
//!   `Bench/Echo`, no engine, no store, no Spindle layers, which W6 measures with the same
//!   probe, idle, and (another one) with busy loops on every core at the CPU pool's
//!   priority inside its own process, where Spindle's CPU pool is in Spindle's.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use clap::Args;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tonic::transport::{Channel, Endpoint, Server};
use tonic::{Request, Response, Status};

use super::load::{Percentiles, micros};
use crate::exec::{CpuPool, CpuPriority};
use crate::pb;
use crate::pb::bench::bench_client::BenchClient;
use crate::pb::bench::bench_server::Bench;
use crate::pb::bench::bench_server::BenchServer;
use crate::pb::bench::{EchoRequest, EchoResponse, FanoutEvent, FanoutRequest};
use crate::pb::job_service_client::JobServiceClient;

/// Flags of the hidden `spindle bench-probe`.
#[derive(Debug, Clone, Args)]
pub struct ProbeArgs {
    /// The server's URL.
    #[arg(long)]
    pub url: String,
    /// GetStatus of this job id; without it, Bench/Echo.
    #[arg(long)]
    pub id: Option<String>,
    /// Calls to time (after 10 % as many untimed, to warm up).
    #[arg(long, default_value_t = 2000)]
    pub calls: usize,
    /// A bearer token to call with (a server with --auth).
    #[arg(long, env = "SPINDLE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

/// What a probe measured, in µs.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct Measured {
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
}

/// Runs the probe in this process and prints its result: `spindle bench-probe`.
pub async fn run_probe(args: ProbeArgs) -> u8 {
    match probe_here(&args).await {
        Ok(measured) => {
            println!("{}", serde_json::json!(measured));
            0
        }
        Err(e) => {
            eprintln!("spindle bench-probe: {e}");
            1
        }
    }
}

async fn probe_here(args: &ProbeArgs) -> Result<Measured, Box<dyn std::error::Error>> {
    let channel = Endpoint::from_shared(args.url.clone())?
        .tcp_nodelay(true)
        .connect()
        .await?;
    let token = match &args.token {
        Some(token) => Some(format!("Bearer {token}").parse()?),
        None => None,
    };
    let mut caller = Caller::new(channel, args.id.clone(), token);
    for _ in 0..args.calls / 10 {
        caller.call().await?;
    }
    let mut samples = Vec::with_capacity(args.calls);
    for _ in 0..args.calls {
        let started = Instant::now();
        caller.call().await?;
        samples.push(micros(started.elapsed()));
    }
    let p = Percentiles::of(samples);
    Ok(Measured {
        p50: p.p50,
        p95: p.p95,
        p99: p.p99,
    })
}

/// One kind of call, made again and again, with a token or none.
struct Caller {
    call: Call,
    token: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
}

enum Call {
    Status(JobServiceClient<Channel>, pb::GetStatusRequest),
    Echo(BenchClient<Channel>, Box<EchoRequest>),
}

impl Caller {
    fn new(
        channel: Channel,
        id: Option<String>,
        token: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
    ) -> Caller {
        let call = match id {
            Some(id) => Call::Status(
                JobServiceClient::new(channel),
                pb::GetStatusRequest {
                    id,
                    ..Default::default()
                },
            ),
            None => Call::Echo(
                BenchClient::new(channel),
                Box::new(EchoRequest {
                    submit: Some(pb::SubmitRequest {
                        kind: "demo.noop".into(),
                        ..Default::default()
                    }),
                }),
            ),
        };
        Caller { call, token }
    }

    /// `message` as a request, with the token if there is one.
    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        if let Some(token) = &self.token {
            request
                .metadata_mut()
                .insert("authorization", token.clone());
        }
        request
    }

    async fn call(&mut self) -> Result<(), tonic::Status> {
        match &self.call {
            Call::Status(client, message) => {
                let request = self.request(message.clone());
                client.clone().get_status(request).await.map(drop)
            }
            Call::Echo(client, message) => {
                let request = self.request(*message.clone());
                client.clone().echo(request).await.map(drop)
            }
        }
    }
}

/// This very binary, which the probe and the echo server run as.
fn spindle_exe() -> Result<PathBuf, String> {
    std::env::current_exe().map_err(|e| format!("cannot find the spindle binary: {e}"))
}

/// Runs a probe process against `url` and returns what it measured.
pub async fn probe(url: &str, id: Option<&str>, calls: usize) -> Result<Measured, String> {
    let mut command = Command::new(spindle_exe()?);
    command.args(["bench-probe", "--url", url, "--calls", &calls.to_string()]);
    if let Some(id) = id {
        command.args(["--id", id]);
    }
    let out = command
        .kill_on_drop(true)
        .stderr(Stdio::inherit())
        .output()
        .await
        .map_err(|e| format!("cannot run the probe: {e}"))?;
    if !out.status.success() {
        return Err(format!("the probe failed ({})", out.status));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("the probe's answer: {e}"))
}

/// Flags of the hidden `spindle bench-echo`.
#[derive(Debug, Clone, Args)]
pub struct EchoArgs {
    /// Busy loops to run in this process, at SCHED_IDLE, while serving.
    #[arg(long, default_value_t = 0)]
    pub busy: usize,
}

/// Serves a bare Bench/Echo on 127.0.0.1 and prints its URL: `spindle bench-echo`. Stops
/// when its stdin closes (its parent went away).
pub async fn serve_echo(args: EchoArgs) -> u8 {
    let _load = match args.busy {
        0 => None,
        n => match BusyCores::start(n, CpuPriority::Idle) {
            Ok(load) => Some(load),
            Err(e) => {
                eprintln!("spindle bench-echo: cannot start the busy loops: {e}");
                return 1;
            }
        },
    };
    let listener = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("spindle bench-echo: cannot listen: {e}");
            return 1;
        }
    };
    let Ok(addr) = listener.local_addr() else {
        return 1;
    };
    println!("http://{addr}");
    let stdin_closed = async {
        let mut lines = BufReader::new(tokio::io::stdin()).lines();
        while let Ok(Some(_)) = lines.next_line().await {}
    };
    let served = Server::builder()
        .add_service(BenchServer::new(BareEcho))
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(listener),
            stdin_closed,
        )
        .await;
    u8::from(served.is_err())
}

/// Echo with nothing behind it: a fixed answer shaped like Submit's. (Not the server's
/// `--bench-echo` service, which runs inside Spindle's stack: this one is the bare limit.)
struct BareEcho;

#[tonic::async_trait]
impl Bench for BareEcho {
    async fn echo(&self, request: Request<EchoRequest>) -> Result<Response<EchoResponse>, Status> {
        std::hint::black_box(request.into_inner());
        let job = pb::Job {
            id: "0193a1b2-0000-7000-8000-000000000000".into(),
            kind: "demo.noop".into(),
            queue: "default".into(),
            namespace: "default".into(),
            state: pb::JobState::Queued as i32,
            created_at: Some(std::time::SystemTime::now().into()),
            ..Default::default()
        };
        let submit = pb::SubmitResponse {
            job: Some(job),
            existing: false,
        };
        Ok(Response::new(EchoResponse {
            submit: Some(submit),
        }))
    }

    type FanoutStream = futures_util::stream::Empty<Result<FanoutEvent, Status>>;

    async fn fanout(
        &self,
        _request: Request<FanoutRequest>,
    ) -> Result<Response<Self::FanoutStream>, Status> {
        Err(Status::unimplemented("the bare echo serves Echo only"))
    }
}

/// A bare echo server in a child process; killed when dropped.
pub struct EchoProcess {
    pub url: String,
    _child: Child,
}

impl EchoProcess {
    /// Starts one, with `busy` busy loops inside it.
    pub async fn start(busy: usize) -> Result<EchoProcess, String> {
        let mut child = Command::new(spindle_exe()?)
            .args(["bench-echo", "--busy", &busy.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start the echo server: {e}"))?;
        let stdout = child.stdout.take().ok_or("the echo server has no stdout")?;
        let url = BufReader::new(stdout)
            .lines()
            .next_line()
            .await
            .map_err(|e| format!("the echo server's address: {e}"))?
            .ok_or("the echo server exited before saying its address")?;
        Ok(EchoProcess { url, _child: child })
    }
}

/// Busy loops on every core, at the CPU pool's priority, until dropped: the load the
/// echo limit is measured under.
pub struct BusyCores {
    stop: Arc<AtomicBool>,
    _pool: CpuPool,
}

impl BusyCores {
    pub fn start(threads: usize, priority: CpuPriority) -> Result<BusyCores, String> {
        let pool = CpuPool::new(threads, priority).map_err(|e| e.to_string())?;
        let stop = Arc::new(AtomicBool::new(false));
        for _ in 0..threads {
            let stop = stop.clone();
            pool.spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::hint::spin_loop();
                }
            });
        }
        Ok(BusyCores { stop, _pool: pool })
    }
}

impl Drop for BusyCores {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
