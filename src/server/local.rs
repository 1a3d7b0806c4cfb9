//! A server running inside this process on a loopback port: the one way tests, `spindle
//! bench` and the cargo benches boot Spindle, so all of them run the very assembly
//! `spindle serve` runs.

use std::net::SocketAddr;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::{ServeError, Spindle};
use crate::engine::Engine;

/// A running in-process server. Dropping it stops the server without waiting.
#[derive(Debug)]
pub struct LocalServer {
    addr: SocketAddr,
    engine: Engine,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), ServeError>>>,
}

impl Spindle {
    /// Prepares and serves on 127.0.0.1 with a port the OS picks, returning once the
    /// listener is bound and the engine runs: calls may be made at once, no waiting.
    pub async fn start_local(self) -> Result<LocalServer, ServeError> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(ServeError::Listener)?;
        let addr = listener.local_addr().map_err(ServeError::Listener)?;
        let prepared = self.prepare(listener).await?;
        let engine = prepared.engine().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(prepared.serve(async move {
            let _ = stopped.await;
        }));
        Ok(LocalServer {
            addr,
            engine,
            stop: Some(stop),
            task: Some(task),
        })
    }
}

impl LocalServer {
    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its URL, for a gRPC client.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The engine behind it (tests look inside).
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Shuts it down gracefully and waits for it.
    pub async fn stop(mut self) -> Result<(), ServeError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.task.take() {
            Some(task) => task
                .await
                .unwrap_or_else(|e| Err(ServeError::Panicked(e.to_string()))),
            None => Ok(()),
        }
    }
}
