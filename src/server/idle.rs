//! How busy each connection is: a tower layer counts a connection's calls in flight (a
//! call lasts until its response body is finished or dropped, so an open watch stream
//! counts), and the connection ([`super::incoming::Connection`]) closes itself once it has
//! had none for the idle timeout. A quiet watch keeps its connection; a client that only
//! holds a connection open, answering pings, does not.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use tokio::time::Instant;
use tonic::codegen::http::{Request, Response};
use tonic::codegen::{Body, Service};
use tonic::transport::server::TcpConnectInfo;

/// One connection's calls in flight, and when that count last changed.
#[derive(Debug)]
pub struct Activity {
    open: AtomicUsize,
    changed: Mutex<Instant>,
}

impl Activity {
    pub fn new() -> Arc<Self> {
        Arc::new(Activity {
            open: AtomicUsize::new(0),
            changed: Mutex::new(Instant::now()),
        })
    }

    /// When the connection went idle, or `None` while a call is in flight.
    pub fn idle_since(&self) -> Option<Instant> {
        // The count first: a call ends by stamping `changed`, then counting down, so a
        // count of 0 seen here comes with that call's stamp, not an older one.
        if self.open.load(Ordering::Acquire) != 0 {
            return None;
        }
        Some(*self.changed.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn begin(self: &Arc<Self>) -> CallGuard {
        self.open.fetch_add(1, Ordering::AcqRel);
        CallGuard(self.clone())
    }
}

/// A call in flight; dropping it ends the call.
struct CallGuard(Arc<Activity>);

impl Drop for CallGuard {
    fn drop(&mut self) {
        *self.0.changed.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What each request learns of its connection: the usual TCP addresses, and its activity.
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    pub tcp: TcpConnectInfo,
    pub activity: Arc<Activity>,
}

/// The layer that counts calls per connection.
#[derive(Debug, Clone, Copy, Default)]
pub struct CountCalls;

impl<S> tower_layer::Layer<S> for CountCalls {
    type Service = Counted<S>;

    fn layer(&self, inner: S) -> Counted<S> {
        Counted { inner }
    }
}

#[derive(Debug, Clone)]
pub struct Counted<S> {
    inner: S,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B, ReqBody> Service<Request<ReqBody>> for Counted<S>
where
    S: Service<Request<ReqBody>, Response = Response<B>>,
    S::Future: Send + 'static,
{
    type Response = Response<CountedBody<B>>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        let info = request.extensions().get::<ConnectionInfo>().cloned();
        let guard = info.map(|info| {
            // tonic's `Request::remote_addr` looks for this one.
            request.extensions_mut().insert(info.tcp);
            info.activity.begin()
        });
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            Ok(response.map(|inner| CountedBody {
                inner,
                _call: guard,
            }))
        })
    }
}

/// A response body that ends its call when it is finished or dropped.
pub struct CountedBody<B> {
    inner: B,
    _call: Option<CallGuard>,
}

impl<B: Body + Unpin> Body for CountedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
