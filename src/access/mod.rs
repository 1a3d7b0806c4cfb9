//! Who may call what, and how much. A [`Policy`] (read from the auth file, [`file`]) names
//! principals, each with a token's hash, a [`Role`] and the namespaces it may use, and
//! per-namespace [`quota::Quota`]s. The [`Gate`] holds the current policy (swapped whole on
//! reload) and each principal's rate bucket, and answers for each call: who is calling,
//! or why not.
//!
//! **Invariants:** a token is never kept, only its SHA-256, which finds its principal
//! through a map and is then compared in constant time; a refusal names the principal and
//! the method, never the token. Health and reflection are open to all.

pub mod file;
pub mod limit;
pub mod quota;
pub mod token;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::time::Instant;

use limit::{Rate, TokenBucket};
use quota::Quota;
use token::TokenHash;

/// What a principal may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Read jobs: GetStatus, WatchProgress, ListJobs, ListKinds, GetStats.
    Reader,
    /// A reader that also submits and cancels: Submit, SubmitBatch, Cancel.
    Submitter,
    /// The worker protocol (spindle.worker.v1.WorkerService), in its namespaces.
    Worker,
    /// Everything: also schedules and workers.
    Admin,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Reader, Role::Submitter, Role::Worker, Role::Admin];

    pub fn name(self) -> &'static str {
        match self {
            Role::Reader => "reader",
            Role::Submitter => "submitter",
            Role::Worker => "worker",
            Role::Admin => "admin",
        }
    }

    pub fn parse(text: &str) -> Result<Role, String> {
        Role::ALL
            .into_iter()
            .find(|r| r.name() == text)
            .ok_or_else(|| {
                let text: String = text.chars().take(64).collect();
                format!("role {text:?}: expected reader, submitter, worker or admin")
            })
    }

    /// Whether this role may make a call that needs `need`.
    pub fn allows(self, need: Need) -> bool {
        matches!(
            (self, need),
            (_, Need::Nothing)
                | (Role::Admin, _)
                | (Role::Reader | Role::Submitter, Need::Read)
                | (Role::Submitter, Need::Submit)
                | (Role::Worker, Need::Work)
        )
    }
}

/// What a call needs, by its gRPC method path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Health and reflection: open to anyone, with or without a token.
    Nothing,
    Read,
    Submit,
    Work,
    Admin,
}

/// The need of a method path (`/package.Service/Method`). Anything not listed, schedules
/// and worker administration included, is the admin's.
pub fn need_of(path: &str) -> Need {
    let (service, method) = path
        .strip_prefix('/')
        .and_then(|p| p.split_once('/'))
        .unwrap_or(("", ""));
    match service {
        "grpc.health.v1.Health"
        | "grpc.reflection.v1.ServerReflection"
        | "grpc.reflection.v1alpha.ServerReflection" => Need::Nothing,
        "spindle.worker.v1.WorkerService" => Need::Work,
        "spindle.v1.JobService" => match method {
            "GetStatus" | "WatchProgress" | "ListJobs" | "ListKinds" | "GetStats" => Need::Read,
            "Submit" | "SubmitBatch" | "Cancel" => Need::Submit,
            _ => Need::Admin,
        },
        _ => Need::Admin,
    }
}

/// The namespaces a principal may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Namespaces {
    All,
    Only(Vec<String>),
}

/// A principal's own limits; `None`: the server's.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PrincipalLimits {
    /// Calls per second, with its burst (every call counts once; a stream when it opens).
    pub rate: Option<Rate>,
    /// The largest args a Submit (or a schedule's template) may carry, if smaller than
    /// the server's `--max-args-bytes`.
    pub max_args_bytes: Option<usize>,
    /// WatchProgress streams open at once.
    pub watchers: Option<u64>,
}

/// Someone who may call, by token.
#[derive(Debug, Clone, PartialEq)]
pub struct Principal {
    pub name: String,
    pub role: Role,
    pub namespaces: Namespaces,
    pub token: TokenHash,
    pub limits: PrincipalLimits,
}

/// Why a principal may not use a namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespaceDenied {
    pub principal: String,
    pub namespace: String,
}

impl std::fmt::Display for NamespaceDenied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "principal {:?} may not use namespace {:?}",
            self.principal, self.namespace
        )
    }
}

impl Principal {
    /// The namespace a request of this principal's means, checked: an empty one is the
    /// principal's only namespace if it has exactly one (so a token bound to one team
    /// needs no namespace on every call), else `default`.
    pub fn namespace(&self, requested: &str) -> Result<String, NamespaceDenied> {
        let name = match (&self.namespaces, requested) {
            (Namespaces::Only(names), "") if names.len() == 1 => return Ok(names[0].clone()),
            (_, "") => crate::model::job::DEFAULT_NAMESPACE,
            (_, name) => name,
        };
        match &self.namespaces {
            Namespaces::All => Ok(name.to_string()),
            Namespaces::Only(names) if names.iter().any(|n| n == name) => Ok(name.to_string()),
            Namespaces::Only(_) => Err(NamespaceDenied {
                principal: self.name.clone(),
                namespace: name.chars().take(64).collect(),
            }),
        }
    }
}

/// The principals and quotas in force.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    principals: Vec<Arc<Principal>>,
    /// Each principal's index by its token's hash.
    by_token: HashMap<[u8; 32], usize>,
    pub quotas: BTreeMap<String, Quota>,
}

impl Policy {
    /// A policy of these principals (their names and tokens already checked unique) and
    /// quotas.
    pub fn new(principals: Vec<Arc<Principal>>, quotas: BTreeMap<String, Quota>) -> Policy {
        let by_token = (principals.iter().enumerate())
            .map(|(i, p)| (p.token.0, i))
            .collect();
        Policy {
            principals,
            by_token,
            quotas,
        }
    }

    pub fn principals(&self) -> &[Arc<Principal>] {
        &self.principals
    }

    /// The principal whose token this is. The token is hashed (its length is all its
    /// timing shows), the hash finds the candidate in a map, and the candidate's hash is
    /// compared in constant time. A lookup's timing depends on the presented hash, which
    /// an attacker cannot steer towards a stored one without a SHA-256 preimage; comparing
    /// against every principal instead cost ~480 instructions per principal per call
    /// (callgrind, 100 principals: 48,000 more per GetStatus).
    pub fn authenticate(&self, token: &str) -> Option<&Arc<Principal>> {
        let presented = TokenHash::of(token);
        let candidate = &self.principals[*self.by_token.get(&presented.0)?];
        candidate.token.matches(&presented).then_some(candidate)
    }
}

/// Why a call was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No token, a malformed one, or one no principal has.
    Unauthenticated(&'static str),
    /// The principal's role does not allow the method.
    Denied { principal: String, role: Role },
    /// The principal's rate limit; retry after the delay.
    Limited {
        principal: String,
        retry_after: Duration,
    },
}

/// The current policy, the principals' rate buckets and their open watch streams.
#[derive(Debug, Default)]
pub struct Gate {
    policy: RwLock<Arc<Policy>>,
    /// Per principal name, so a reload keeps a principal's bucket.
    buckets: Mutex<HashMap<String, TokenBucket>>,
    /// Open WatchProgress streams per principal name (kept across reloads: the streams
    /// stay open).
    watching: Mutex<HashMap<String, Arc<AtomicU64>>>,
}

impl Gate {
    pub fn new(policy: Policy) -> Gate {
        Gate {
            policy: RwLock::new(Arc::new(policy)),
            buckets: Mutex::default(),
            watching: Mutex::default(),
        }
    }

    /// The policy in force.
    pub fn policy(&self) -> Arc<Policy> {
        self.policy
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Puts a new policy in force for every call from now on; calls and streams already
    /// admitted go on.
    pub fn replace(&self, policy: Policy) {
        let names: Vec<String> = policy.principals().iter().map(|p| p.name.clone()).collect();
        *self.policy.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(policy);
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        buckets.retain(|name, _| names.contains(name));
        drop(buckets);
        // A removed principal's open streams keep their own count and free it as they end.
        let mut watching = self.watching.lock().unwrap_or_else(|e| e.into_inner());
        watching.retain(|name, _| names.contains(name));
    }

    /// The count of a principal's open watch streams.
    pub fn watching(&self, principal: &str) -> Arc<AtomicU64> {
        let mut watching = self.watching.lock().unwrap_or_else(|e| e.into_inner());
        watching.entry(principal.to_string()).or_default().clone()
    }

    /// Admits a call to `path` with this `authorization` metadata value, or says why not.
    /// `None` for a call that needs nothing (health, reflection), whatever it carries.
    pub fn admit(
        &self,
        path: &str,
        authorization: Option<&[u8]>,
        now: Instant,
    ) -> Result<Option<Arc<Principal>>, Refusal> {
        let need = need_of(path);
        if need == Need::Nothing {
            return Ok(None);
        }
        let header = authorization.ok_or(Refusal::Unauthenticated(
            "no token: send the metadata `authorization: Bearer <token>`",
        ))?;
        let token = bearer(header).ok_or(Refusal::Unauthenticated(
            "malformed authorization metadata: expected `Bearer <token>`",
        ))?;
        let policy = self.policy();
        let principal = (policy.authenticate(token).cloned())
            .ok_or(Refusal::Unauthenticated("unknown token"))?;
        if !principal.role.allows(need) {
            return Err(Refusal::Denied {
                principal: principal.name.clone(),
                role: principal.role,
            });
        }
        if let Some(rate) = &principal.limits.rate {
            let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
            let bucket = (buckets.entry(principal.name.clone()))
                .or_insert_with(|| TokenBucket::full(rate, now));
            bucket
                .take(rate, 1.0, now)
                .map_err(|retry_after| Refusal::Limited {
                    principal: principal.name.clone(),
                    retry_after,
                })?;
        }
        Ok(Some(principal))
    }
}

/// The token of `Bearer <token>` (the scheme in any case).
fn bearer(header: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(header).ok()?.trim();
    let (scheme, token) = text.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests;
