//! The `spindle` binary: parse flags, then hand over to the library.

use std::process::ExitCode;

use clap::Parser;
use spindle::cli::client::exit;
use spindle::cli::{Cli, Command, ServeArgs};
use spindle::server::Spindle;
use tokio::net::TcpListener;

/// mimalloc instead of glibc's malloc: the writer thread and the tokio workers allocate
/// and free each other's buffers all the time, and glibc's arena locks showed up in
/// profiles (`__lll_lock_wait_private`, ~15 % of samples in malloc and free).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
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
        Some(Command::Serve(ref args)) => args.clone(),
        None => ServeArgs::default(),
        Some(Command::Bench(ref args)) => {
            return ExitCode::from(spindle::cli::bench::run(args.clone(), cli.json).await);
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
