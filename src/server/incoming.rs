//! The accept loop: what a connection may cost before it is any use. At most
//! `max_connections` are open at once (more wait in the kernel's backlog); one that does
//! not send the HTTP/2 preface within `handshake_timeout` is closed, and so is one with no
//! call in flight for `idle_timeout` ([`super::idle`] counts them); an accept error such
//! as running out of file descriptors is logged and backed off from instead of retried in
//! a busy loop (tonic's own loop retries at once and logs at trace level).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_util::Stream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::transport::server::Connected;

use super::idle::{Activity, ConnectionInfo};

/// Limits on connections.
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    /// Connections open at once.
    pub max_connections: usize,
    /// How long a new connection has to send the HTTP/2 preface.
    pub handshake_timeout: Duration,
    /// How long a connection may stay open with no call in flight.
    pub idle_timeout: Duration,
    /// Idle time before TCP keepalive probes start (dead peers are dropped).
    pub tcp_keepalive: Duration,
    /// How often an HTTP/2 PING checks a quiet connection, and how long its answer may
    /// take before the connection is dropped as dead.
    pub keepalive_interval: Duration,
    pub keepalive_timeout: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            max_connections: default_max_connections(),
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
            tcp_keepalive: Duration::from_secs(60),
            keepalive_interval: Duration::from_secs(60),
            keepalive_timeout: Duration::from_secs(20),
        }
    }
}

/// 10,000, or fewer if the process may not open that many files: a quarter of the
/// descriptors stay for the database, files and outgoing requests.
pub fn default_max_connections() -> usize {
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile).current;
    let usable = limit.map_or(usize::MAX, |n| {
        usize::try_from(n / 4 * 3).unwrap_or(usize::MAX)
    });
    usable.clamp(16, 10_000)
}

/// The HTTP/2 client preface's length: the handshake is done once this much has arrived.
const PREFACE: usize = 24;
/// The longest pause between accept attempts while accepting fails.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// Accepted connections, as a stream tonic serves. It never yields an error.
pub fn accept(
    listener: TcpListener,
    limits: ConnectionLimits,
) -> impl Stream<Item = Result<Connection, io::Error>> {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let state = (listener, slots, limits, Backoff::default());
    futures_util::stream::unfold(state, |(listener, slots, limits, mut backoff)| async move {
        let connection = next(&listener, &slots, &limits, &mut backoff).await;
        Some((Ok(connection), (listener, slots, limits, backoff)))
    })
}

async fn next(
    listener: &TcpListener,
    slots: &Arc<Semaphore>,
    limits: &ConnectionLimits,
    backoff: &mut Backoff,
) -> Connection {
    // Take a slot before accepting: at the limit, new clients wait in the backlog.
    let slot = slots.clone().acquire_owned().await.expect("never closed");
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                backoff.reset();
                return Connection::new(stream, slot, limits);
            }
            // The peer gave up before we took it: nothing is wrong here.
            Err(e) if is_peer_error(&e) => continue,
            Err(e) => backoff.wait(&e).await,
        }
    }
}

fn is_peer_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    )
}

/// Exponential backoff from 10 ms to [`MAX_BACKOFF`], logging the first failure and then
/// at most one line every 10 s.
#[derive(Default)]
struct Backoff {
    delay: Duration,
    failures: u64,
    logged: Option<Instant>,
}

impl Backoff {
    async fn wait(&mut self, error: &io::Error) {
        self.failures += 1;
        self.delay = (self.delay * 2).clamp(Duration::from_millis(10), MAX_BACKOFF);
        if self
            .logged
            .is_none_or(|at| at.elapsed() >= Duration::from_secs(10))
        {
            tracing::error!(%error, failures = self.failures, "cannot accept connections (out of file descriptors?); backing off");
            self.logged = Some(Instant::now());
        }
        tokio::time::sleep(self.delay).await;
    }

    fn reset(&mut self) {
        if self.failures > 0 {
            tracing::info!(failures = self.failures, "accepting connections again");
        }
        *self = Backoff::default();
    }
}

/// An accepted connection: holds its slot until it closes, and fails its reads if the
/// handshake does not arrive in time or it stays idle too long.
pub struct Connection {
    stream: TcpStream,
    _slot: OwnedSemaphorePermit,
    /// Until the preface has arrived: the deadline, and bytes read so far.
    handshake: Option<(Pin<Box<tokio::time::Sleep>>, usize)>,
    activity: Arc<Activity>,
    idle_timeout: Duration,
    /// Wakes the connection when it may have been idle for `idle_timeout`.
    idle_check: Pin<Box<tokio::time::Sleep>>,
}

impl Connection {
    fn new(stream: TcpStream, slot: OwnedSemaphorePermit, limits: &ConnectionLimits) -> Self {
        // Small stream messages must not wait for Nagle's algorithm and delayed ACKs (~40
        // ms a message); keepalive finds dead peers that would hold a watch open forever.
        let _ = stream.set_nodelay(true);
        let _ = rustix::net::sockopt::set_socket_keepalive(&stream, true);
        let _ = rustix::net::sockopt::set_tcp_keepidle(&stream, limits.tcp_keepalive);
        let deadline = Box::pin(tokio::time::sleep(limits.handshake_timeout));
        Connection {
            stream,
            _slot: slot,
            handshake: Some((deadline, 0)),
            activity: Activity::new(),
            idle_timeout: limits.idle_timeout,
            idle_check: Box::pin(tokio::time::sleep(limits.idle_timeout)),
        }
    }

    /// While a read waits: whether the connection has been idle too long; otherwise the
    /// idle check is armed for the moment it could be.
    fn idle_too_long(&mut self, cx: &mut Context<'_>) -> bool {
        let now = tokio::time::Instant::now();
        let due = match self.activity.idle_since() {
            Some(since) if now >= since + self.idle_timeout => return true,
            Some(since) => since + self.idle_timeout,
            // Busy: keep a pending check rather than move the timer on every read.
            None if self.idle_check.deadline() > now => self.idle_check.deadline(),
            None => now + self.idle_timeout,
        };
        if self.idle_check.deadline() != due {
            self.idle_check.as_mut().reset(due);
        }
        // Registers the wake-up; if it is already due, look again at once.
        if self.idle_check.as_mut().poll(cx).is_ready() {
            cx.waker().wake_by_ref();
        }
        false
    }
}

impl Connected for Connection {
    type ConnectInfo = ConnectionInfo;

    fn connect_info(&self) -> ConnectionInfo {
        ConnectionInfo {
            tcp: self.stream.connect_info(),
            activity: self.activity.clone(),
        }
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        let read = Pin::new(&mut this.stream).poll_read(cx, buf);
        let Some((deadline, seen)) = &mut this.handshake else {
            if read.is_pending() && this.idle_too_long(cx) {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no call in flight within the idle timeout",
                )));
            }
            return read;
        };
        *seen += buf.filled().len() - before;
        if *seen >= PREFACE {
            this.handshake = None;
            return read;
        }
        if read.is_pending() && deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "no HTTP/2 preface within the handshake timeout",
            )));
        }
        read
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}
