//! Assembles and runs the server: the engine, JobService, ScheduleService, WorkerService,
//! grpc.health.v1, reflection (v1 and v1alpha, for grpcurl 1.8), message size limits, and
//! a bounded graceful shutdown.
//!
//! Shutdown order: the signal stops new connections; the engine stops dispatching, lets
//! running jobs finish within the grace period and cancels the rest; then open watch
//! streams end with UNAVAILABLE, and the server is given a moment to flush them.

mod guard;
mod idle;
mod incoming;
mod local;
pub mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::Server;

use crate::api::JobApi;
use crate::api::echo::EchoApi;
use crate::api::schedule::ScheduleApi;
use crate::api::worker::WorkerApi;
use crate::engine::{Engine, EngineConfig};
use crate::jobs::files::FilesDir;
use crate::jobs::http::HttpConfig;
use crate::jobs::registry::JobKind;
use crate::pb;
use crate::pb::bench::bench_server::BenchServer;
use crate::pb::job_service_server::JobServiceServer;
use crate::pb::schedule_service_server::ScheduleServiceServer;
use crate::pb::worker::worker_service_server::WorkerServiceServer;
use crate::store::{MemoryStore, SqliteStore, Store, StoreError};
pub use incoming::{ConnectionLimits, default_max_connections};
pub use local::LocalServer;

/// The largest request accepted, in bytes.
pub const MAX_REQUEST_BYTES: usize = 4 << 20;
/// The largest response sent, in bytes.
pub const MAX_RESPONSE_BYTES: usize = 16 << 20;
/// How long open streams get to flush after the engine has stopped.
const STREAM_DRAIN: Duration = Duration::from_secs(2);
/// The default MAX_CONCURRENT_STREAMS: calls one connection may have open at once.
pub const DEFAULT_STREAMS_PER_CONNECTION: u32 = 1000;

/// Where jobs are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreConfig {
    /// In process memory: lost on restart. For tests and throwaway use.
    Memory,
    /// A SQLite database in this directory: durable.
    Sqlite { data_dir: PathBuf },
}

/// Everything `spindle serve` can be told.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Where jobs are kept.
    pub store: StoreConfig,
    /// Where file jobs may read and write.
    pub files_dir: PathBuf,
    pub engine: EngineConfig,
    /// How long running jobs get to finish at shutdown before they are cancelled.
    pub shutdown_grace: Duration,
    /// Also serve `spindle.v1.Bench` (Echo and Fanout), the benchmark's no-engine
    /// reference RPCs.
    pub bench_echo: bool,
    /// `http.request`'s egress policy and timeout cap.
    pub http: HttpConfig,
    /// The largest args a Submit may carry, as encoded in the request.
    pub max_args_bytes: usize,
    /// What connections may cost: how many, how long a handshake may take.
    pub connections: ConnectionLimits,
    /// Concurrent streams (calls) one HTTP/2 connection may hold (MAX_CONCURRENT_STREAMS).
    pub max_streams_per_connection: u32,
    /// Serve TLS (and with a client CA, mTLS); `None`: plaintext.
    pub tls: Option<tls::TlsFiles>,
    /// The auth file: principals and quotas, reloaded on SIGHUP. `None`: no tokens are
    /// checked (and the server stays on loopback unless told otherwise).
    pub auth: Option<PathBuf>,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            store: StoreConfig::Sqlite {
                data_dir: PathBuf::from("spindle-data"),
            },
            files_dir: PathBuf::from("spindle-files"),
            engine: EngineConfig::default(),
            shutdown_grace: Duration::from_secs(30),
            bench_echo: false,
            http: HttpConfig::default(),
            max_args_bytes: crate::api::convert::DEFAULT_MAX_ARGS_BYTES,
            connections: ConnectionLimits::default(),
            max_streams_per_connection: DEFAULT_STREAMS_PER_CONNECTION,
            tls: None,
            auth: None,
        }
    }
}

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot use the files directory {path}: {source}")]
    FilesDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open the store: {0}")]
    Store(#[from] StoreError),
    #[error("cannot start the engine: {0}")]
    Engine(#[from] crate::engine::EngineError),
    #[error("cannot build the reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("cannot read the listener's address: {0}")]
    Listener(std::io::Error),
    #[error("transport error: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("the server task panicked: {0}")]
    Panicked(String),
    #[error(
        "refusing to listen on {0}: it is not a loopback address, and nothing authenticates \
         clients, so anyone who reaches the port could submit, read and cancel every job. \
         Listen on 127.0.0.1 (the default), require tokens (--auth FILE, see `spindle auth \
         add`) or client certificates (--tls-client-ca, with --tls-cert and --tls-key), or pass --insecure (SPINDLE_INSECURE=1) if only \
         trusted peers can reach it"
    )]
    Exposed(SocketAddr),
    #[error("cannot set up TLS: {0}")]
    Tls(String),
    #[error("cannot load the auth file {path}: {why}")]
    Auth { path: PathBuf, why: String },
}

/// Safe by default: a server listens beyond loopback only when clients must authenticate
/// (tokens or mTLS: `authenticated`) or when told to with `insecure`. Checked before
/// binding.
pub fn check_exposure(
    addr: SocketAddr,
    insecure: bool,
    authenticated: bool,
) -> Result<(), ServeError> {
    if addr.ip().is_loopback() || insecure || authenticated {
        Ok(())
    } else {
        Err(ServeError::Exposed(addr))
    }
}

/// A Spindle server: built-in kinds plus any the caller adds.
pub struct Spindle {
    config: ServeConfig,
    extra_kinds: Vec<JobKind>,
    store: Option<Arc<dyn Store>>,
}

impl std::fmt::Debug for Spindle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spindle")
            .field("config", &self.config)
            .field("extra_kinds", &self.extra_kinds)
            .finish_non_exhaustive()
    }
}

impl Spindle {
    pub fn new(config: ServeConfig) -> Self {
        Spindle {
            config,
            extra_kinds: Vec::new(),
            store: None,
        }
    }

    /// Uses this store instead of opening the one the config names.
    pub fn with_store(mut self, store: Arc<dyn Store>) -> Self {
        self.store = Some(store);
        self
    }

    /// Adds a job kind (replacing a built-in of the same name).
    pub fn with_kind(mut self, kind: impl Into<JobKind>) -> Self {
        self.extra_kinds.push(kind.into());
        self
    }

    /// Serves on `listener` until `shutdown` resolves, then shuts down gracefully.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        self.prepare(listener).await?.serve(shutdown).await
    }

    /// Opens the files directory and starts the engine, without serving yet; the caller
    /// gets a handle on the engine (tests use it to look inside).
    pub async fn prepare(self, listener: TcpListener) -> Result<Prepared, ServeError> {
        let tls = self
            .config
            .tls
            .as_ref()
            .map(tls::server_config)
            .transpose()?;
        let files =
            FilesDir::open(&self.config.files_dir).map_err(|source| ServeError::FilesDir {
                path: self.config.files_dir.clone(),
                source,
            })?;
        let mut registry = crate::jobs::builtins(files, self.config.http.clone());
        for kind in self.extra_kinds {
            registry.register(kind);
        }
        let store = match self.store {
            Some(store) => store,
            None => open_store(&self.config.store).await?,
        };
        let engine = Engine::start(&self.config.engine, registry, store).await?;
        let access = match &self.config.auth {
            Some(path) => Some(guard::Access::load(path.clone(), engine.clone()).await?),
            None => None,
        };
        let shown = |path: &std::path::Path| {
            let absolute = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
            absolute.display().to_string()
        };
        let folders = Folders {
            data: match &self.config.store {
                StoreConfig::Memory => "none (memory store: nothing is kept)".into(),
                StoreConfig::Sqlite { data_dir } => shown(data_dir),
            },
            files: shown(&self.config.files_dir),
        };
        Ok(Prepared {
            folders,
            listener,
            engine,
            grace: self.config.shutdown_grace,
            bench_echo: self.config.bench_echo,
            max_args_bytes: self.config.max_args_bytes,
            connections: self.config.connections,
            max_streams: self.config.max_streams_per_connection,
            tls,
            access,
        })
    }
}

/// Opens the configured store (off the async threads: opening checks the database).
async fn open_store(config: &StoreConfig) -> Result<Arc<dyn Store>, ServeError> {
    match config {
        StoreConfig::Memory => Ok(Arc::new(MemoryStore::new())),
        StoreConfig::Sqlite { data_dir } => {
            let data_dir = data_dir.clone();
            let store = tokio::task::spawn_blocking(move || SqliteStore::open(&data_dir))
                .await
                .map_err(|e| ServeError::Store(StoreError::Refused(e.to_string())))??;
            Ok(Arc::new(store))
        }
    }
}

/// Where a server keeps its jobs and files, as the start-up log names them.
#[derive(Debug, Clone)]
struct Folders {
    data: String,
    files: String,
}

/// A server whose engine runs, ready to serve.
#[derive(Debug)]
pub struct Prepared {
    folders: Folders,
    listener: TcpListener,
    engine: Engine,
    grace: Duration,
    bench_echo: bool,
    max_args_bytes: usize,
    connections: ConnectionLimits,
    max_streams: u32,
    tls: Option<tonic::transport::ServerTlsConfig>,
    access: Option<guard::Access>,
}

impl Prepared {
    /// The engine behind the API.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Serves until `shutdown` resolves, then shuts down gracefully.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        let addr = self.listener.local_addr().map_err(ServeError::Listener)?;
        let echo = self
            .bench_echo
            .then(|| BenchServer::new(EchoApi::default()));
        let api = JobApi::new(self.engine.clone()).with_max_args_bytes(self.max_args_bytes);
        let keepalive = (
            self.connections.keepalive_interval,
            self.connections.keepalive_timeout,
        );
        let incoming = incoming::accept(self.listener, self.connections);
        let serving = Serving {
            max_streams: self.max_streams,
            keepalive,
            api,
            echo,
            grace: self.grace,
            folders: self.folders,
            tls: self.tls,
            access: self.access,
        };
        serve_engine(incoming, addr, serving, shutdown).await
    }
}

/// What `serve_engine` serves, and how.
struct Serving {
    max_streams: u32,
    /// HTTP/2 PING interval and timeout.
    keepalive: (Duration, Duration),
    api: JobApi,
    echo: Option<BenchServer<EchoApi>>,
    grace: Duration,
    folders: Folders,
    tls: Option<tonic::transport::ServerTlsConfig>,
    access: Option<guard::Access>,
}

async fn serve_engine(
    incoming: impl futures_util::Stream<Item = Result<incoming::Connection, std::io::Error>>
    + Send
    + 'static,
    addr: SocketAddr,
    Serving {
        max_streams,
        keepalive,
        api,
        echo,
        grace,
        folders,
        tls,
        access,
    }: Serving,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter.set_serving::<JobServiceServer<JobApi>>().await;
    let engine = api.engine().clone();
    let schedules = ScheduleApi::new(engine.clone()).with_max_args_bytes(api.max_args_bytes());
    let schedules = ScheduleServiceServer::new(schedules)
        .max_decoding_message_size(MAX_REQUEST_BYTES)
        .max_encoding_message_size(MAX_RESPONSE_BYTES);
    let jobs = JobServiceServer::new(api)
        .max_decoding_message_size(MAX_REQUEST_BYTES)
        .max_encoding_message_size(MAX_RESPONSE_BYTES);
    let workers = WorkerServiceServer::new(WorkerApi::new(engine.clone()))
        .max_decoding_message_size(MAX_REQUEST_BYTES)
        .max_encoding_message_size(MAX_RESPONSE_BYTES);
    let bench = echo.is_some();
    // Reflection describes only what is served: Bench is listed only when it runs. The
    // full google.rpc descriptors go first: the first file registered under a name wins,
    // and proto/google/rpc holds only the subset Spindle sends.
    let reflection = || {
        let builder = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET);
        if bench {
            builder.register_encoded_file_descriptor_set(pb::bench::FILE_DESCRIPTOR_SET)
        } else {
            builder
        }
    };
    let stop_accepting = CancellationToken::new();
    let tls_mode = match &tls {
        None => "off",
        Some(_) => "on",
    };
    let mut builder = Server::builder();
    if let Some(tls) = tls {
        builder = builder.tls_config(tls)?;
    }
    let auth_mode = if access.is_some() { "tokens" } else { "off" };
    let gate = access.map(|access| {
        access.reload_on_hangup();
        access.gate()
    });
    let router = builder
        .layer(idle::CountCalls)
        .layer(guard::Guard::new(gate))
        .max_concurrent_streams(max_streams)
        .http2_keepalive_interval(Some(keepalive.0))
        .http2_keepalive_timeout(Some(keepalive.1))
        .add_service(health)
        .add_service(reflection().build_v1()?)
        .add_service(reflection().build_v1alpha()?)
        .add_service(jobs)
        .add_service(schedules)
        .add_service(workers)
        .add_optional_service(echo);
    let server =
        router.serve_with_incoming_shutdown(incoming, stop_accepting.clone().cancelled_owned());
    tokio::pin!(server);
    tracing::info!(%addr, tls = tls_mode, auth = auth_mode, data = %folders.data, files = %folders.files, "serving spindle.v1.JobService, spindle.v1.ScheduleService and spindle.worker.v1.WorkerService");

    tokio::select! {
        result = &mut server => {
            // The transport failed under us: no client can reach the engine any more, so
            // stop it as a shutdown would (running jobs get the grace, the writer flushes).
            tracing::error!("the transport stopped; shutting the engine down");
            reporter.set_not_serving::<JobServiceServer<JobApi>>().await;
            engine.shutdown(grace).await;
            return result.map_err(ServeError::from);
        }
        () = shutdown => {}
    }
    tracing::info!("shutting down: no new connections");
    stop_accepting.cancel();
    reporter.set_not_serving::<JobServiceServer<JobApi>>().await;
    engine.shutdown(grace).await;
    match tokio::time::timeout(STREAM_DRAIN, &mut server).await {
        Ok(result) => result?,
        Err(_) => tracing::warn!("some connections stayed open; closing anyway"),
    }
    tracing::info!("stopped");
    Ok(())
}
