//! W8's minimal Rust worker (`spindle bench-worker`, hidden): one session, one kind, every
//! assignment completed at once with an empty result, one credit granted back per
//! completion. What it costs is the worker protocol's own cost: no handler, no pool.

use clap::Args;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::pb::worker as pbw;
use crate::pb::worker::server_message::Message as FromServer;
use crate::pb::worker::worker_message::Message as ToServer;
use crate::pb::worker::worker_service_client::WorkerServiceClient;

/// The kind W8's workers declare.
pub const KIND: &str = "bench.remote_noop";

/// Flags of `spindle bench-worker`.
#[derive(Debug, Clone, Args)]
pub struct WorkerArgs {
    /// The server's URL.
    #[arg(long)]
    pub url: String,
    /// The worker's id.
    #[arg(long, default_value = "rust-bench")]
    pub id: String,
    /// Jobs it may hold at once (credits).
    #[arg(long, default_value_t = 256)]
    pub slots: u32,
}

fn message(m: ToServer) -> pbw::WorkerMessage {
    pbw::WorkerMessage { message: Some(m) }
}

/// Runs the worker until its session ends: `spindle bench-worker`. Prints "ready" once
/// welcomed, so the bench knows when to start the clock.
pub async fn run_worker(args: WorkerArgs) -> u8 {
    match work(&args).await {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("bench-worker: {e}");
            1
        }
    }
}

async fn work(args: &WorkerArgs) -> Result<(), String> {
    let mut client = WorkerServiceClient::connect(args.url.clone())
        .await
        .map_err(|e| e.to_string())?;
    let (tx, rx) = mpsc::channel(args.slots as usize * 2 + 16);
    let hello = pbw::Hello {
        worker_id: args.id.clone(),
        kinds: vec![pbw::KindDeclaration {
            name: KIND.into(),
            description: "W8: does nothing, in a worker process".into(),
            args_schema: None,
            max_attempts: 0,
        }],
        sdk: "spindle bench-worker (Rust)".into(),
        ..Default::default()
    };
    let send = |m| tx.try_send(message(m)).map_err(|e| e.to_string());
    send(ToServer::Hello(hello))?;
    let mut inbound = client
        .session(ReceiverStream::new(rx))
        .await
        .map_err(|e| e.to_string())?
        .into_inner();
    while let Some(m) = inbound.message().await.map_err(|e| e.to_string())? {
        let messages = match m.message {
            Some(FromServer::Batch(batch)) => batch.messages,
            other => vec![pbw::ServerMessage { message: other }],
        };
        // Everything a batch assigns is completed in one batch back, with its credits.
        let mut answer = Vec::new();
        let mut freed = 0;
        for m in messages {
            match m.message {
                Some(FromServer::Welcome(_)) => {
                    send(ToServer::Credit(pbw::Credit { slots: args.slots }))?;
                    println!("ready");
                }
                Some(FromServer::Assign(a)) => {
                    let complete = pbw::Complete {
                        lease: a.lease,
                        result: None,
                    };
                    answer.push(message(ToServer::Complete(complete)));
                    freed += 1;
                }
                _ => {}
            }
        }
        if freed > 0 {
            answer.push(message(ToServer::Credit(pbw::Credit { slots: freed })));
            let batch = pbw::WorkerBatch { messages: answer };
            tx.send(message(ToServer::Batch(batch)))
                .await
                .map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}
