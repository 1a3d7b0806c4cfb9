//! The `spindle` binary: parse flags, then hand over to the library.

use std::process::ExitCode;

use clap::Parser;
use spindle::cli::client::exit;
use spindle::cli::schedule::{self, ScheduleCommand};
use spindle::cli::{Cli, Command, ServeArgs};
use spindle::server::Spindle;
use tokio::net::TcpListener;

/// mimalloc instead of glibc's malloc: the writer thread and the tokio workers allocate
/// and free each other's buffers all the time, and glibc's arena locks showed up in
/// profiles (`__lll_lock_wait_private`, ~15 % of samples in malloc and free).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Store reads run on tokio's blocking pool. Its default of 512 threads lets a burst of
/// reads (10,000 watchers attaching at once) leave hundreds of idle threads behind, after
/// which API reads under a saturated CPU pool waited ~4 ms at p99 (W6 after W4 in
/// BENCHMARKS.md: 13.5x the idle p99 with 512 threads, 4.6x with 16, 2.5x with 4). Two
/// threads per core read SQLite as fast: reads are short and the cores are the limit.
fn blocking_threads() -> usize {
    std::thread::available_parallelism().map_or(4, |n| (2 * n.get()).max(4))
}

fn main() -> ExitCode {
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(blocking_threads())
        .build()
    {
        Ok(runtime) => runtime.block_on(run()),
        Err(e) => {
            eprintln!("spindle: cannot start the async runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            // Help and version are not errors; bad flags exit 64 (EX_USAGE), keeping 1 and 2
            // for a watched job's failure and cancellation.
            return ExitCode::from(if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            });
        }
    };
    let args = match cli.command {
        Some(Command::Serve(ref args)) => (**args).clone(),
        None => ServeArgs::default(),
        Some(Command::Bench(ref args)) => {
            return ExitCode::from(spindle::cli::bench::run(args.clone(), cli.json).await);
        }
        Some(Command::BenchProbe(ref args)) => {
            return ExitCode::from(spindle::bench::probe::run_probe(args.clone()).await);
        }
        Some(Command::BenchEcho(ref args)) => {
            return ExitCode::from(spindle::bench::probe::serve_echo(args.clone()).await);
        }
        Some(Command::Schedule(ref args)) => {
            if let ScheduleCommand::Preview(preview) = &args.command {
                return ExitCode::from(schedule::preview(preview, cli.json));
            }
            return ExitCode::from(spindle::cli::run_client(cli).await);
        }
        Some(Command::Auth(ref args)) => {
            return ExitCode::from(spindle::cli::auth::run(args, &cli.namespace, cli.json));
        }
        Some(Command::BenchWorker(ref args)) => {
            return ExitCode::from(spindle::bench::worker::run_worker(args.clone()).await);
        }
        Some(_) => return ExitCode::from(spindle::cli::run_client(cli).await),
    };
    spindle::telemetry::init();
    match serve(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("spindle: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: ServeArgs) -> Result<(), Box<dyn std::error::Error>> {
    let client_certs = args.tls_client_ca.is_some();
    let authenticated = client_certs || args.auth.is_some();
    spindle::server::check_exposure(args.addr, args.insecure, authenticated)?;
    let exposed = !args.addr.ip().is_loopback();
    if args.insecure && !authenticated && exposed {
        tracing::warn!(listen = %args.addr, "--insecure: listening beyond loopback with no authentication");
    }
    if args.auth.is_some() && args.tls_cert.is_none() && exposed {
        tracing::warn!(listen = %args.addr, "tokens travel in plaintext beyond loopback; serve TLS (--tls-cert, --tls-key) so they cannot be read off the network");
    }
    let shutdown = shutdown_signal().map_err(|e| format!("cannot install signal handlers: {e}"))?;
    let listener = TcpListener::bind(args.addr)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.addr))?;
    Spindle::new(args.config())
        .serve(listener, shutdown)
        .await?;
    Ok(())
}

/// Resolves on SIGINT or SIGTERM. The handlers are installed when this is called, not
/// when the future is first polled, so a signal that arrives while the server is still
/// starting is not lost (and does not kill the process the default way).
fn shutdown_signal() -> Result<impl Future<Output = ()> + Send + 'static, std::io::Error> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => tracing::info!("SIGINT received"),
            _ = terminate.recv() => tracing::info!("SIGTERM received"),
        }
    })
}
