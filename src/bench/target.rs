//! What the benchmark talks to: a server it starts in this process (one per workload and
//! run, with a fresh store, and the Echo reference service), or one already running at a
//! URL. Also the client side: a few HTTP/2 connections shared by many tasks.

use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

use crate::engine::Engine;
use crate::pb::bench::bench_client::BenchClient;
use crate::pb::job_service_client::JobServiceClient;
use crate::server::{LocalServer, ServeConfig, Spindle, StoreConfig};

/// Which store an in-process server uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    Memory,
    Sqlite,
}

impl StoreKind {
    pub fn name(self) -> &'static str {
        match self {
            StoreKind::Memory => "memory",
            StoreKind::Sqlite => "sqlite",
        }
    }
}

/// A server to measure, and how to reach it.
pub struct Target {
    pub url: String,
    /// "memory", "sqlite" or "remote".
    pub store: String,
    /// The in-process server's engine, when there is one.
    pub engine: Option<Engine>,
    server: Option<LocalServer>,
    _dirs: Vec<tempfile::TempDir>,
}

impl Target {
    /// Starts a server in this process on 127.0.0.1:0 with a fresh store.
    pub async fn start(store: StoreKind) -> Result<Target, Box<dyn std::error::Error>> {
        let files = tempfile::tempdir()?;
        let data = tempfile::tempdir()?;
        let config = ServeConfig {
            store: match store {
                StoreKind::Memory => StoreConfig::Memory,
                StoreKind::Sqlite => StoreConfig::Sqlite {
                    data_dir: data.path().to_path_buf(),
                },
            },
            files_dir: files.path().to_path_buf(),
            shutdown_grace: Duration::from_secs(1),
            bench_echo: true,
            ..ServeConfig::default()
        };
        let server = Spindle::new(config).start_local().await?;
        Ok(Target {
            url: server.url(),
            store: store.name().into(),
            engine: Some(server.engine().clone()),
            server: Some(server),
            _dirs: vec![files, data],
        })
    }

    /// A server already running at `url`.
    pub fn remote(url: &str) -> Target {
        Target {
            url: url.to_string(),
            store: "remote".into(),
            engine: None,
            server: None,
            _dirs: Vec::new(),
        }
    }

    /// Opens `n` HTTP/2 connections.
    pub async fn connect(&self, n: usize) -> Result<Vec<Channel>, tonic::transport::Error> {
        let mut channels = Vec::with_capacity(n);
        for _ in 0..n.max(1) {
            let endpoint = Endpoint::from_shared(self.url.clone())?.tcp_nodelay(true);
            channels.push(endpoint.connect().await?);
        }
        Ok(channels)
    }

    pub async fn jobs(&self) -> Result<JobServiceClient<Channel>, tonic::transport::Error> {
        Ok(JobServiceClient::new(self.connect(1).await?.remove(0)))
    }

    pub async fn echo(&self) -> Result<BenchClient<Channel>, tonic::transport::Error> {
        Ok(BenchClient::new(self.connect(1).await?.remove(0)))
    }

    /// Stops an in-process server and waits for it.
    pub async fn stop(mut self) {
        if let Some(server) = self.server.take() {
            let _ = server.stop().await;
        }
    }
}

/// This process's resident memory, in bytes (Linux; 0 elsewhere).
pub fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}
