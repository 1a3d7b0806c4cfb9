//! `spindle serve`'s flags, each with an environment variable, and the server
//! configuration they describe.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser};

use crate::engine::EngineConfig;
use crate::exec::CpuPriority;
use crate::jobs::egress::{Allow, EgressPolicy};
use crate::jobs::http::HttpConfig;
use crate::server::tls::TlsFiles;
use crate::server::{ConnectionLimits, ServeConfig, StoreConfig};

/// Flags of `spindle serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Where jobs are kept: "sqlite" (durable, in --data-dir) or "memory" (lost on exit).
    #[arg(long, env = "SPINDLE_STORE", default_value = "sqlite", value_parser = ["sqlite", "memory"])]
    pub store: String,
    /// Directory of the durable store; created if missing.
    #[arg(long, env = "SPINDLE_DATA_DIR", default_value = "spindle-data")]
    pub data_dir: PathBuf,
    /// How long finished jobs are kept, e.g. 7d, 12h.
    #[arg(long, env = "SPINDLE_RETENTION", default_value = "7d", value_parser = parse_duration)]
    pub retention: Duration,
    /// A queue's concurrency limit, as NAME=N (each namespace's queue of that name); repeat
    /// for more queues.
    #[arg(long = "queue-limit", env = "SPINDLE_QUEUE_LIMITS", value_delimiter = ',', value_parser = parse_queue_limit)]
    pub queue_limits: Vec<(String, usize)>,
    /// Address to listen on. Only a loopback address unless clients must authenticate
    /// (--auth or --tls-client-ca) or --insecure is given.
    #[arg(long, env = "SPINDLE_ADDR", default_value = "127.0.0.1:50051")]
    pub addr: SocketAddr,
    /// Who may call: an auth file of principals (token hashes, roles, namespaces, limits)
    /// and namespace quotas; see `spindle auth add`. Reloaded on SIGHUP. Without it,
    /// every caller may do everything.
    #[arg(long, env = "SPINDLE_AUTH")]
    pub auth: Option<PathBuf>,
    /// Listen on a non-loopback address although nothing authenticates clients: anyone
    /// who reaches the port can submit, read and cancel every job. For trusted networks
    /// only (a private container network, say).
    #[arg(long, env = "SPINDLE_INSECURE")]
    pub insecure: bool,
    /// Serve TLS with this certificate (PEM; the chain, leaf first).
    #[arg(long, env = "SPINDLE_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM).
    #[arg(long, env = "SPINDLE_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Require client certificates signed by this CA (PEM): mTLS.
    #[arg(long, env = "SPINDLE_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
    /// Directory file jobs may read and write; created if missing.
    #[arg(long, env = "SPINDLE_FILES_DIR", default_value = "spindle-files")]
    pub files_dir: PathBuf,
    /// Threads in the CPU pool (default: the number of cores).
    #[arg(long, env = "SPINDLE_CPU_THREADS", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub cpu_threads: Option<u16>,
    /// How the CPU pool's threads yield to the API: `idle` (Linux SCHED_IDLE: they run only
    /// when a core is otherwise free) or `nice` (a raised nice value, see --cpu-nice).
    #[arg(long, env = "SPINDLE_CPU_PRIORITY", default_value = "idle", value_parser = ["idle", "nice"])]
    pub cpu_priority: String,
    /// With --cpu-priority nice: how much lower the CPU pool's priority is (0 disables).
    #[arg(long, env = "SPINDLE_CPU_NICE", default_value_t = 10, value_parser = clap::value_parser!(i32).range(0..=19))]
    pub cpu_nice: i32,
    /// IO jobs running at once.
    #[arg(long, env = "SPINDLE_IO_CONCURRENCY", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub io_concurrency: u32,
    /// Time running jobs get to finish at shutdown before they are cancelled, e.g. 30s.
    #[arg(long, env = "SPINDLE_SHUTDOWN_GRACE", default_value = "30s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,
    /// Also serve spindle.v1.Bench (Echo and Fanout), the no-engine RPCs `spindle bench`
    /// compares against.
    #[arg(long, env = "SPINDLE_BENCH_ECHO")]
    pub bench_echo: bool,
    /// Lets http.request reach a destination the egress policy refuses (loopback,
    /// private, link-local...): CIDR, IP[:PORT] or HOST[:PORT]; repeat for more.
    #[arg(long = "allow-egress", env = "SPINDLE_ALLOW_EGRESS", value_delimiter = ',', value_parser = parse_allow)]
    pub allow_egress: Vec<Allow>,
    /// The largest args a Submit may carry, in bytes as encoded in the request.
    #[arg(long, env = "SPINDLE_MAX_ARGS_BYTES", default_value_t = 256 * 1024, value_parser = clap::value_parser!(u32).range(1..=4 * 1024 * 1024))]
    pub max_args_bytes: u32,
    /// Connections open at once; more wait (default: 10,000, or fewer if the file
    /// descriptor limit is lower).
    #[arg(long, env = "SPINDLE_MAX_CONNECTIONS", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: Option<u32>,
    /// Concurrent calls one connection may have open (HTTP/2 MAX_CONCURRENT_STREAMS).
    #[arg(long, env = "SPINDLE_MAX_STREAMS_PER_CONNECTION", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_streams_per_connection: u32,
    /// How long a new connection has to send the HTTP/2 preface before it is closed.
    #[arg(long, env = "SPINDLE_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub handshake_timeout: Duration,
    /// How long a connection may stay open with no call in flight (a watch stream is a
    /// call for as long as it is open).
    #[arg(long, env = "SPINDLE_IDLE_TIMEOUT", default_value = "5m", value_parser = parse_duration)]
    pub idle_timeout: Duration,
    /// How often an HTTP/2 PING checks a quiet connection.
    #[arg(long, env = "SPINDLE_KEEPALIVE_INTERVAL", default_value = "60s", value_parser = parse_duration)]
    pub keepalive_interval: Duration,
    /// How long a PING's answer may take before the connection is dropped as dead.
    #[arg(long, env = "SPINDLE_KEEPALIVE_TIMEOUT", default_value = "20s", value_parser = parse_duration)]
    pub keepalive_timeout: Duration,
    /// How long a remote worker's leases live without a heartbeat (workers heartbeat every
    /// third of it); past it, its jobs are requeued.
    #[arg(long, env = "SPINDLE_LEASE_TTL", default_value = "30s", value_parser = parse_lease_ttl)]
    pub lease_ttl: Duration,
    /// How long a remote worker has to stop a cancelled or timed-out job before its lease
    /// is revoked.
    #[arg(long, env = "SPINDLE_CANCEL_GRACE", default_value = "10s", value_parser = parse_duration)]
    pub cancel_grace: Duration,
    /// Times a remote job may lose its worker's lease before it fails (a job that kills
    /// every worker it runs on).
    #[arg(long, env = "SPINDLE_MAX_LEASE_EXPIRIES", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub max_lease_expiries: u32,
    /// The longest timeout an http.request job may ask for, e.g. 5m.
    #[arg(long, env = "SPINDLE_HTTP_MAX_TIMEOUT", default_value = "5m", value_parser = parse_duration)]
    pub http_max_timeout: Duration,
}

fn parse_lease_ttl(text: &str) -> Result<Duration, String> {
    let ttl = parse_duration(text)?;
    if ttl < Duration::from_millis(300) || ttl > Duration::from_secs(3600) {
        return Err("must be from 300ms to 1h".into());
    }
    Ok(ttl)
}

fn parse_allow(text: &str) -> Result<Allow, String> {
    text.parse()
}

impl Default for ServeArgs {
    fn default() -> Self {
        ServeArgs::parse_from_empty()
    }
}

impl ServeArgs {
    fn parse_from_empty() -> Self {
        #[derive(Parser)]
        struct Only {
            #[command(flatten)]
            args: ServeArgs,
        }
        Only::parse_from(["spindle"]).args
    }

    /// The server configuration these flags describe.
    pub fn config(&self) -> ServeConfig {
        let mut engine = EngineConfig {
            cpu_priority: match self.cpu_priority.as_str() {
                "nice" => CpuPriority::Nice(self.cpu_nice),
                _ => CpuPriority::Idle,
            },
            io_concurrency: self.io_concurrency as usize,
            retention: self.retention,
            queue_limits: self.queue_limits.iter().cloned().collect(),
            lease_ttl: self.lease_ttl,
            cancel_grace: self.cancel_grace,
            max_lease_expiries: self.max_lease_expiries,
            ..EngineConfig::default()
        };
        if let Some(threads) = self.cpu_threads {
            engine.cpu_threads = usize::from(threads);
        }
        let store = match self.store.as_str() {
            "memory" => StoreConfig::Memory,
            _ => StoreConfig::Sqlite {
                data_dir: self.data_dir.clone(),
            },
        };
        ServeConfig {
            store,
            files_dir: self.files_dir.clone(),
            engine,
            shutdown_grace: self.shutdown_grace,
            bench_echo: self.bench_echo,
            http: HttpConfig {
                egress: EgressPolicy::new(self.allow_egress.clone()),
                max_timeout: self.http_max_timeout,
            },
            max_args_bytes: self.max_args_bytes as usize,
            connections: ConnectionLimits {
                max_connections: self
                    .max_connections
                    .map_or_else(crate::server::default_max_connections, |n| n as usize),
                handshake_timeout: self.handshake_timeout,
                idle_timeout: self.idle_timeout,
                keepalive_interval: self.keepalive_interval,
                keepalive_timeout: self.keepalive_timeout,
                ..ConnectionLimits::default()
            },
            max_streams_per_connection: self.max_streams_per_connection,
            tls: match (&self.tls_cert, &self.tls_key) {
                (Some(cert), Some(key)) => Some(TlsFiles {
                    cert: cert.clone(),
                    key: key.clone(),
                    client_ca: self.tls_client_ca.clone(),
                }),
                _ => None,
            },
            auth: self.auth.clone(),
        }
    }
}

/// Parses "NAME=N", a queue's concurrency limit.
pub fn parse_queue_limit(text: &str) -> Result<(String, usize), String> {
    let (name, limit) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not NAME=N"))?;
    let limit: usize = limit
        .trim()
        .parse()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("the limit in {text:?} must be a positive number"))?;
    Ok((name.trim().to_string(), limit))
}

/// Parses "500ms", "30s", "2m", "1h", "7d" or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.starts_with('-') {
        return Err(format!("{text:?}: a duration must not be negative"));
    }
    // One number and one unit, decimals allowed (1.5, 0.5s, 2m); else humantime's forms
    // (1h30m, 2days 4h, 250ms).
    simple_duration(text)
        .or_else(|| humantime::parse_duration(text).ok())
        .ok_or_else(|| format!("{text:?} is not a duration like 500ms, 30s, 1.5m, 1h30m or 7d"))
}

fn simple_duration(text: &str) -> Option<Duration> {
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().ok()?;
    let scale = match unit.trim() {
        "ms" => 0.001,
        "" | "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        "d" => 86_400.0,
        _ => return None,
    };
    Duration::try_from_secs_f64(value * scale).ok()
}
