//! Who is calling: the principal the server's access layer admitted the call as (in the
//! request's extensions; none when the server has no `--auth`), and the namespaces and
//! limits that follow from it. Every method that names a namespace goes through
//! [`Caller::admit`] before it converts the request.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tonic::Request;

use super::Error;
use crate::access::Principal;
use crate::engine::EngineError;

/// The principal and the method of an admitted call.
#[derive(Debug, Clone)]
pub struct Admitted {
    pub principal: Arc<Principal>,
    pub method: Arc<str>,
    /// The principal's open watch streams (shared by all its calls); set on WatchProgress
    /// calls only.
    pub watching: Option<Arc<AtomicU64>>,
}

/// One of a principal's open watch streams; dropping it (the stream ends or the client
/// leaves) frees its place.
#[derive(Debug)]
pub struct WatchSlot(Option<Arc<AtomicU64>>);

impl Drop for WatchSlot {
    fn drop(&mut self) {
        if let Some(count) = &self.0 {
            count.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// A call's caller: a principal, or anyone when the server checks no tokens.
#[derive(Debug, Clone, Default)]
pub struct Caller(Option<Admitted>);

impl Caller {
    pub fn of<T>(request: &Request<T>) -> Caller {
        Caller(request.extensions().get::<Admitted>().cloned())
    }

    /// The principal's name, or `None` without `--auth`.
    pub fn name(&self) -> Option<&str> {
        self.0.as_ref().map(|a| a.principal.name.as_str())
    }

    /// Resolves a request's namespace field in place and checks the principal may use it:
    /// an empty field becomes the principal's only namespace if it has one, and a
    /// namespace it may not use is PERMISSION_DENIED (logged). Without a principal, the
    /// field is left as it is.
    pub fn admit(&self, namespace: &mut String) -> Result<(), Error> {
        let Some(admitted) = &self.0 else {
            return Ok(());
        };
        match admitted.principal.namespace(namespace) {
            Ok(resolved) => {
                *namespace = resolved;
                Ok(())
            }
            Err(denied) => {
                tracing::warn!(
                    principal = %admitted.principal.name,
                    method = %admitted.method,
                    namespace = %denied.namespace,
                    "refused: namespace not allowed"
                );
                Err(Error::Denied(denied.to_string()))
            }
        }
    }

    /// A place for one more watch stream, or RESOURCE_EXHAUSTED if the principal has its
    /// `watchers=` open already.
    pub fn watch_slot(&self) -> Result<WatchSlot, Error> {
        let Some(admitted) = &self.0 else {
            return Ok(WatchSlot(None));
        };
        let (Some(max), Some(count)) = (admitted.principal.limits.watchers, &admitted.watching)
        else {
            return Ok(WatchSlot(None));
        };
        let count = count.clone();
        if count.fetch_add(1, Ordering::AcqRel) >= max {
            count.fetch_sub(1, Ordering::AcqRel);
            let name = &admitted.principal.name;
            tracing::warn!(principal = %name, method = %admitted.method, max, "refused: watch streams");
            return Err(Error::Exhausted {
                message: format!(
                    "principal {name:?} has {max} watch streams open (watchers=); close one or retry later"
                ),
                retry_after: std::time::Duration::from_secs(1),
            });
        }
        Ok(WatchSlot(Some(count)))
    }

    /// Logs a quota refusal with the principal and the method (the gate logs its own
    /// refusals; the engine's quotas are met here), and passes the result on.
    pub fn noted<T>(&self, result: Result<T, EngineError>) -> Result<T, EngineError> {
        if let Err(EngineError::QuotaExceeded {
            namespace, what, ..
        }) = &result
        {
            let (principal, method) = match &self.0 {
                Some(a) => (a.principal.name.as_str(), &*a.method),
                None => ("", ""),
            };
            tracing::warn!(principal, method, %namespace, quota = %what, "refused: quota");
        }
        result
    }

    /// The largest args this caller may send: the server's limit, or the principal's own
    /// if smaller.
    pub fn max_args_bytes(&self, server: usize) -> usize {
        let own = self
            .0
            .as_ref()
            .and_then(|a| a.principal.limits.max_args_bytes);
        own.map_or(server, |own| own.min(server))
    }
}
