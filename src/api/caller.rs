//! Who is calling: the principal the server's access layer admitted the call as (in the
//! request's extensions; none when the server has no `--auth`), and the namespaces and
//! limits that follow from it. Every method that names a namespace goes through
//! [`Caller::admit`] before it converts the request.

use std::sync::Arc;

use tonic::Request;

use super::Error;
use crate::access::Principal;

/// The principal and the method of an admitted call.
#[derive(Debug, Clone)]
pub struct Admitted {
    pub principal: Arc<Principal>,
    pub method: Arc<str>,
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
