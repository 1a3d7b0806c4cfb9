//! The client subcommands: submit, status, cancel, jobs, kinds (and the connection and
//! error handling they share). `watch` lives in [`super::watch`].

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Map, Value, json};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use tonic::{Code, Status};
use tonic_types::StatusExt;

use super::render;
use super::{JobArgs, JobsArgs, StatusArgs, SubmitArgs};
use crate::pb;
use crate::pb::job_service_client::JobServiceClient;
use crate::pb::json::json_to_struct;

/// A channel whose every call carries the `--token`, if one is given.
pub type AuthedChannel = InterceptedService<Channel, Bearer>;

/// The generated client over one channel.
pub type Client = JobServiceClient<AuthedChannel>;

/// Adds `authorization: Bearer <token>` to every call.
#[derive(Clone, Default)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl std::fmt::Debug for Bearer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token itself.
        f.write_str(if self.0.is_some() {
            "Bearer(..)"
        } else {
            "Bearer(none)"
        })
    }
}

impl Bearer {
    /// The interceptor for `token`; a token that cannot travel as metadata is a usage
    /// error (named without its value).
    pub fn new(token: Option<&str>) -> Result<Bearer, CliError> {
        let Some(token) = token.map(str::trim).filter(|t| !t.is_empty()) else {
            return Ok(Bearer(None));
        };
        let value = format!("Bearer {token}").parse().map_err(|_| {
            CliError::Usage("--token (SPINDLE_TOKEN) holds characters a header cannot carry".into())
        })?;
        Ok(Bearer(Some(value)))
    }
}

impl Interceptor for Bearer {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// A connected server and the namespace the commands act in.
pub struct Remote {
    pub client: Client,
    /// The connection (with the token), for the other services' clients.
    pub channel: AuthedChannel,
    /// The address as given, for messages.
    pub server: String,
    /// The namespace every request names (`--namespace`).
    pub namespace: String,
}

/// Exit codes, documented in the README.
pub mod exit {
    /// The command worked (for watch: the job SUCCEEDED).
    pub const OK: u8 = 0;
    /// The watched job FAILED.
    pub const JOB_FAILED: u8 = 1;
    /// The watched job was CANCELLED.
    pub const JOB_CANCELLED: u8 = 2;
    /// The server refused the request (bad input, no such job, already finished...).
    pub const REFUSED: u8 = 3;
    /// Bad flags or arguments.
    pub const USAGE: u8 = 64;
    /// The server could not be reached or is unavailable.
    pub const UNAVAILABLE: u8 = 69;
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Usage(String),
    #[error("cannot reach {server}: {detail}")]
    Unreachable { server: String, detail: String },
    #[error("{message}")]
    Rpc {
        status: Box<Status>,
        message: String,
    },
}

impl CliError {
    /// A server refusal, said the way a person would say it.
    pub fn rpc(status: Status, server: &str, id: Option<&str>) -> Self {
        let message = match (status.code(), id) {
            (Code::NotFound, Some(id)) => format!("no job {id} on {server}"),
            (Code::Unavailable, _) => format!("{server} is unavailable: {}", status.message()),
            _ => {
                // Each violation once: the message often is the one violation already.
                let mut text = status.message().to_string();
                if let Some(bad) = status.get_details_bad_request() {
                    for v in bad.field_violations {
                        let line = format!("{}: {}", v.field, v.description);
                        if !text.contains(&line) {
                            text.push_str(&format!("\n  {line}"));
                        }
                    }
                }
                text
            }
        };
        CliError::Rpc {
            status: Box::new(status),
            message,
        }
    }

    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) => exit::USAGE,
            CliError::Unreachable { .. } => exit::UNAVAILABLE,
            CliError::Rpc { status, .. } if status.code() == Code::Unavailable => exit::UNAVAILABLE,
            CliError::Rpc { .. } => exit::REFUSED,
        }
    }

    /// `{"error": {"code": ..., "message": ...}}` for `--json`.
    pub fn to_json(&self) -> Value {
        let code = match self {
            CliError::Usage(_) => "Usage".to_string(),
            CliError::Unreachable { .. } => "Unreachable".to_string(),
            CliError::Rpc { status, .. } => format!("{:?}", status.code()),
        };
        json!({ "error": { "code": code, "message": self.to_string() } })
    }
}

/// Connects to the server, to act in `namespace`.
pub async fn connect(
    server: &str,
    namespace: &str,
    tls: &ClientTls,
    token: Option<&str>,
) -> Result<Remote, CliError> {
    let bearer = Bearer::new(token)?;
    let channel = InterceptedService::new(connect_channel(server, tls).await?, bearer);
    Ok(Remote {
        client: JobServiceClient::new(channel.clone()),
        channel,
        server: server.to_string(),
        namespace: namespace.to_string(),
    })
}

/// The client's TLS files (`--ca`, `--cert`, `--key`).
#[derive(Debug, Clone, Default)]
pub struct ClientTls {
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

impl ClientTls {
    /// tonic's settings: the CA to trust (else the system's roots are not used: give
    /// --ca), and the client identity for mTLS.
    fn config(&self) -> Result<ClientTlsConfig, CliError> {
        let read = |path: &PathBuf, flag: &str| {
            std::fs::read(path)
                .map_err(|e| CliError::Usage(format!("{flag} {}: {e}", path.display())))
        };
        let mut config = ClientTlsConfig::new();
        if let Some(ca) = &self.ca {
            config = config.ca_certificate(Certificate::from_pem(read(ca, "--ca")?));
        }
        if let (Some(cert), Some(key)) = (&self.cert, &self.key) {
            let identity = Identity::from_pem(read(cert, "--cert")?, read(key, "--key")?);
            config = config.identity(identity);
        }
        Ok(config)
    }
}

/// Connects to the server: a URL, or `host:port` as grpcurl takes it. `https://`, or a
/// `--ca`, means TLS.
async fn connect_channel(server: &str, tls: &ClientTls) -> Result<Channel, CliError> {
    let secure = server.starts_with("https://") || tls.ca.is_some();
    let url = match server.split_once("://") {
        Some(("http", rest)) if secure => format!("https://{rest}"),
        Some(_) => server.to_string(),
        None if secure => format!("https://{server}"),
        None => format!("http://{server}"),
    };
    let bad_url = |why: String| {
        CliError::Usage(format!(
            "--server {server:?} is not an address like 127.0.0.1:50051 or http://host:port: {why}"
        ))
    };
    let parsed: tonic::codegen::http::Uri = url.parse().map_err(|e| bad_url(format!("{e}")))?;
    if parsed.host().is_none() {
        return Err(bad_url("no host".into()));
    }
    let mut endpoint = Channel::from_shared(url)
        .map_err(|e| bad_url(e.to_string()))?
        .connect_timeout(Duration::from_secs(5));
    if secure {
        endpoint = endpoint
            .tls_config(tls.config()?)
            .map_err(|e| CliError::Usage(format!("TLS: {}", source_chain(&e))))?;
    }
    let channel = endpoint.connect().await.map_err(|e| {
        let detail = source_chain(&e);
        let refused = detail.contains("Connection refused");
        CliError::Unreachable {
            server: server.to_string(),
            detail: if refused {
                "nothing answers there. Start a server with `spindle serve` (or point --server \
                 or SPINDLE_SERVER at one)"
                    .into()
            } else {
                last_cause(&e)
            },
        }
    })?;
    Ok(channel)
}

/// The innermost cause of an error: transport errors wrap the same text several times.
fn last_cause(e: &dyn std::error::Error) -> String {
    let mut cause = e;
    while let Some(inner) = cause.source() {
        cause = inner;
    }
    cause.to_string()
}

/// An error and its causes, joined (tonic's top-level transport error says little).
pub fn source_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The args object from `--args JSON` and `--arg key=value` (a value that parses as JSON
/// is taken as JSON, so `seconds=5` is a number; anything else is a string).
pub fn build_args(
    json_args: Option<&str>,
    pairs: &[String],
) -> Result<Map<String, Value>, CliError> {
    let mut args = match json_args {
        None => Map::new(),
        Some(text) => match serde_json::from_str(text) {
            Ok(Value::Object(map)) => map,
            Ok(_) => return Err(CliError::Usage("--args must be a JSON object".into())),
            Err(e) => return Err(CliError::Usage(format!("--args is not valid JSON: {e}"))),
        },
    };
    for pair in pairs {
        let (key, raw) = pair
            .split_once('=')
            .ok_or_else(|| CliError::Usage(format!("--arg {pair:?} is not KEY=VALUE")))?;
        let value = serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_string()));
        args.insert(key.to_string(), value);
    }
    Ok(args)
}

/// The SubmitRequest a job's flags describe (no namespace, delay or key yet).
pub fn job_request(a: &JobArgs) -> Result<pb::SubmitRequest, CliError> {
    let args = build_args(a.args.as_deref(), &a.arg)?;
    Ok(pb::SubmitRequest {
        kind: a.kind.clone(),
        args: Some(json_to_struct(&args)),
        queue: a.queue.clone().unwrap_or_default(),
        priority: a.priority,
        timeout: a.timeout.and_then(|d| d.try_into().ok()),
        retry: a.max_attempts.map(|n| pb::RetryPolicy {
            max_attempts: n,
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// `spindle submit`: returns the new job.
pub async fn submit(r: &mut Remote, a: &SubmitArgs) -> Result<pb::Job, CliError> {
    let request = pb::SubmitRequest {
        delay: a.delay.and_then(|d| d.try_into().ok()),
        idempotency_key: a.idempotency_key.clone().unwrap_or_default(),
        namespace: r.namespace.clone(),
        ..job_request(&a.job)?
    };
    let response =
        (r.client.submit(request).await).map_err(|s| CliError::rpc(s, &r.server, None))?;
    response
        .into_inner()
        .job
        .ok_or_else(|| CliError::Usage("the server answered without a job".into()))
}

/// `spindle status`.
pub async fn status(r: &mut Remote, a: &StatusArgs) -> Result<pb::Job, CliError> {
    let request = pb::GetStatusRequest {
        id: a.id.clone(),
        wait: a.wait.and_then(|d| prost_types::Duration::try_from(d).ok()),
        namespace: r.namespace.clone(),
    };
    let job = (r.client.get_status(request).await)
        .map_err(|s| CliError::rpc(s, &r.server, Some(&a.id)))?;
    Ok(job.into_inner())
}

/// `spindle cancel`.
pub async fn cancel(r: &mut Remote, id: &str) -> Result<pb::Job, CliError> {
    let request = pb::CancelRequest {
        id: id.to_string(),
        namespace: r.namespace.clone(),
    };
    let job =
        (r.client.cancel(request).await).map_err(|s| CliError::rpc(s, &r.server, Some(id)))?;
    Ok(job.into_inner())
}

/// `spindle jobs`.
pub async fn jobs(r: &mut Remote, a: &JobsArgs) -> Result<Vec<pb::Job>, CliError> {
    let state = match a.state.as_deref() {
        None => pb::JobState::Unspecified,
        Some(name) => {
            let upper = format!("JOB_STATE_{}", name.to_ascii_uppercase());
            pb::JobState::from_str_name(&upper)
                .ok_or_else(|| CliError::Usage(format!("--state {name:?} is not a job state")))?
        }
    };
    // A page may end early (it is bounded by bytes too): follow pages up to the limit.
    let mut jobs = Vec::new();
    let mut page_token = String::new();
    while jobs.len() < a.limit as usize {
        let request = pb::ListJobsRequest {
            state: state as i32,
            kind: a.kind.clone().unwrap_or_default(),
            queue: a.queue.clone().unwrap_or_default(),
            schedule_id: a.schedule.clone().unwrap_or_default(),
            page_size: a.limit - jobs.len() as u32,
            page_token,
            namespace: r.namespace.clone(),
            ..Default::default()
        };
        let page = (r.client.list_jobs(request).await)
            .map_err(|s| CliError::rpc(s, &r.server, None))?
            .into_inner();
        jobs.extend(page.jobs);
        page_token = page.next_page_token;
        if page_token.is_empty() {
            break;
        }
    }
    Ok(jobs)
}

/// `spindle kinds`.
pub async fn kinds(r: &mut Remote) -> Result<Vec<pb::JobKind>, CliError> {
    let kinds = (r
        .client
        .list_kinds(pb::ListKindsRequest {
            namespace: r.namespace.clone(),
        })
        .await)
        .map_err(|s| CliError::rpc(s, &r.server, None))?;
    Ok(kinds.into_inner().kinds)
}

/// `spindle workers`.
pub async fn workers(r: &mut Remote) -> Result<Vec<pb::Worker>, CliError> {
    let request = pb::ListWorkersRequest {
        namespace: r.namespace.clone(),
    };
    let workers =
        (r.client.list_workers(request).await).map_err(|s| CliError::rpc(s, &r.server, None))?;
    Ok(workers.into_inner().workers)
}

/// `spindle workers --drain ID`.
pub async fn drain_worker(
    r: &mut Remote,
    id: &str,
    grace: std::time::Duration,
) -> Result<pb::Worker, CliError> {
    let request = pb::DrainWorkerRequest {
        namespace: r.namespace.clone(),
        id: id.to_string(),
        grace: grace.try_into().ok(),
    };
    let worker =
        (r.client.drain_worker(request).await).map_err(|s| CliError::rpc(s, &r.server, None))?;
    Ok(worker.into_inner())
}

pub async fn stats(r: &mut Remote) -> Result<pb::Stats, CliError> {
    let request = pb::GetStatsRequest {
        namespace: r.namespace.clone(),
    };
    let stats =
        (r.client.get_stats(request).await).map_err(|s| CliError::rpc(s, &r.server, None))?;
    Ok(stats.into_inner())
}

/// Prints a job per `--json`.
pub fn print_job(job: &pb::Job, json: bool) {
    if json {
        out!("{}", render::job_json(job));
    } else {
        out!("{}", render::job_text(job));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_merge_json_and_pairs() {
        let pairs = [
            "seconds=5".to_string(),
            "name=bob".to_string(),
            "flag=true".to_string(),
        ];
        let args = build_args(Some(r#"{"steps": 2, "seconds": 1}"#), &pairs).unwrap();
        assert_eq!(
            Value::Object(args),
            json!({"steps": 2, "seconds": 5, "name": "bob", "flag": true})
        );
        assert!(build_args(Some("[1]"), &[]).is_err());
        assert!(build_args(None, &["novalue".into()]).is_err());
    }
}
