//! The access layer: a tower layer in front of every service that admits each call by its
//! `authorization: Bearer` metadata and method path ([`crate::access::Gate`]), puts the
//! principal into the request's extensions for the services ([`crate::api::caller`]), and
//! answers a refused call itself, logging the principal (if known), the method and the
//! peer, never the token. Without `--auth` the layer passes every call through.
//!
//! [`Access`] loads the auth file, hands its quotas to the engine, and reloads both on
//! SIGHUP: a file that does not parse is logged and the old policy stays in force.

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::time::Instant;
use tonic::codegen::Service;
use tonic::codegen::http::{Request, Response};

use super::ServeError;
use super::idle::ConnectionInfo;
use crate::access::{Gate, Policy, Refusal, file};
use crate::api::caller::Admitted;
use crate::api::error::refusal_status;
use crate::engine::Engine;

/// The auth file in force: where it is, the gate it feeds and the engine its quotas go to.
#[derive(Debug, Clone)]
pub struct Access {
    path: PathBuf,
    gate: Arc<Gate>,
    engine: Engine,
}

impl Access {
    /// Reads and parses the auth file and puts its quotas in force.
    pub async fn load(path: PathBuf, engine: Engine) -> Result<Access, ServeError> {
        let policy = read_policy(&path).await.map_err(|why| ServeError::Auth {
            path: path.clone(),
            why,
        })?;
        tracing::info!(file = %path.display(), principals = policy.principals().len(), quotas = policy.quotas.len(), "auth file loaded");
        engine.set_quotas(policy.quotas.clone());
        Ok(Access {
            path,
            gate: Arc::new(Gate::new(policy)),
            engine,
        })
    }

    pub fn gate(&self) -> Arc<Gate> {
        self.gate.clone()
    }

    /// Reads the file again and puts it in force; on an error the old policy stays.
    pub async fn reload(&self) -> Result<(), String> {
        let policy = read_policy(&self.path).await?;
        tracing::info!(file = %self.path.display(), principals = policy.principals().len(), quotas = policy.quotas.len(), "auth file reloaded");
        self.engine.set_quotas(policy.quotas.clone());
        self.gate.replace(policy);
        Ok(())
    }

    /// Reloads on every SIGHUP, for as long as the process runs. Connections and open
    /// streams are not touched: the new policy applies to calls from then on.
    pub fn reload_on_hangup(&self) {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hangups = match signal(SignalKind::hangup()) {
            Ok(hangups) => hangups,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGHUP; the auth file will not be reloaded");
                return;
            }
        };
        let access = self.clone();
        tokio::spawn(async move {
            while hangups.recv().await.is_some() {
                if let Err(why) = access.reload().await {
                    tracing::error!(file = %access.path.display(), error = %why, "auth file not reloaded; the old one stays in force");
                }
            }
        });
    }
}

async fn read_policy(path: &std::path::Path) -> Result<Policy, String> {
    let text = tokio::fs::read_to_string(path)
        .await
        .map_err(|e| e.to_string())?;
    file::parse(&text).map_err(|e| e.to_string())
}

/// The layer that admits calls through a gate, or passes them all without one.
#[derive(Debug, Clone)]
pub struct Guard {
    gate: Option<Arc<Gate>>,
}

impl Guard {
    pub fn new(gate: Option<Arc<Gate>>) -> Guard {
        Guard { gate }
    }
}

impl<S> tower_layer::Layer<S> for Guard {
    type Service = Guarded<S>;

    fn layer(&self, inner: S) -> Guarded<S> {
        Guarded {
            inner,
            gate: self.gate.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Guarded<S> {
    inner: S,
    gate: Option<Arc<Gate>>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B, ReqBody> Service<Request<ReqBody>> for Guarded<S>
where
    S: Service<Request<ReqBody>, Response = Response<B>>,
    S::Future: Send + 'static,
    B: Default + Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response<B>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Response<B>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        let Some(gate) = &self.gate else {
            return Box::pin(self.inner.call(request));
        };
        let path = request.uri().path();
        let authorization = request.headers().get("authorization").map(|v| v.as_bytes());
        match gate.admit(path, authorization, Instant::now()) {
            Ok(Some(principal)) => {
                let method: Arc<str> = Arc::from(path);
                // Only a watch counts against `watchers=`: other calls skip the lock.
                let watching =
                    (path.ends_with("/WatchProgress")).then(|| gate.watching(&principal.name));
                request.extensions_mut().insert(Admitted {
                    principal,
                    method,
                    watching,
                });
            }
            Ok(None) => {}
            Err(refusal) => {
                log_refusal(&request, &refusal);
                let status = refusal_status(&refusal, path);
                return Box::pin(std::future::ready(Ok(status.into_http())));
            }
        }
        Box::pin(self.inner.call(request))
    }
}

fn log_refusal<B>(request: &Request<B>, refusal: &Refusal) {
    let method = request.uri().path();
    let peer = (request.extensions().get::<ConnectionInfo>())
        .and_then(|info| info.tcp.remote_addr())
        .map(|addr| addr.to_string())
        .unwrap_or_default();
    match refusal {
        Refusal::Unauthenticated(why) => {
            tracing::warn!(method, peer, reason = why, "refused: unauthenticated");
        }
        Refusal::Denied { principal, role } => {
            tracing::warn!(
                principal,
                role = role.name(),
                method,
                peer,
                "refused: role does not allow the method"
            );
        }
        Refusal::Limited {
            principal,
            retry_after,
        } => {
            tracing::warn!(principal, method, peer, ?retry_after, "refused: rate limit");
        }
    }
}
