//! `http.request` (IO): calls a URL, like a webhook, and records the status, the headers
//! and the first 64 KiB of the body. Fails when the status is not the expected one (any
//! 2xx unless `expect_status` says otherwise), so a failing webhook shows as FAILED. A 4xx
//! answer (but 408 and 429) fails permanently; 5xx, 408, 429 and network errors are retried
//! by the job's policy. Where it may connect is the [`EgressPolicy`]'s to say; a refusal
//! at run time fails the job permanently.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};

use super::egress::{EgressPolicy, EgressRefused, PolicyResolver};
use super::registry::{ArgsError, JobKind};
use crate::exec::{HandlerError, JobContext, JobResult};
use crate::model::job::Progress;

/// The most body bytes kept in the result.
pub const MAX_BODY: usize = 64 * 1024;
/// The most redirects one request follows.
const MAX_REDIRECTS: usize = 10;

/// What the operator decides for `http.request`.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Where requests may go.
    pub egress: EgressPolicy,
    /// The longest `timeout` a job may ask for, so slow targets cannot hold the IO pool.
    pub max_timeout: Duration,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            egress: EgressPolicy::default(),
            max_timeout: Duration::from_secs(300),
        }
    }
}

/// Arguments of `http.request`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpArgs {
    /// The http:// or https:// URL to call.
    pub url: String,
    /// The HTTP method (default GET).
    #[serde(default = "default_method")]
    pub method: String,
    /// Request headers. Their values are secret (`writeOnly`): kept for the call, never
    /// shown again (GetStatus and ListJobs show "[redacted]").
    #[serde(default)]
    #[schemars(extend("additionalProperties" = {"type": "string", "writeOnly": true}))]
    pub headers: BTreeMap<String, String>,
    /// The request body, sent as given.
    #[serde(default)]
    pub body: Option<String>,
    /// Seconds before the call is abandoned (default 30, at most the server's
    /// `--http-max-timeout`, 300 unless set).
    #[serde(default = "default_timeout")]
    pub timeout: f64,
    /// The status that counts as success; any 2xx when not given.
    #[serde(default)]
    pub expect_status: Option<u16>,
}

fn default_method() -> String {
    "GET".into()
}

fn default_timeout() -> f64 {
    30.0
}

/// The kind; one client is shared by all requests (connection pooling). It resolves names
/// through the policy, checks every redirect against it, and ignores proxy variables (a
/// proxy would connect on the job's behalf, past the policy).
pub fn kind(config: HttpConfig) -> JobKind {
    let policy = Arc::new(config.egress);
    let checked = policy.clone();
    let redirects = policy.clone();
    let client = reqwest::Client::builder()
        .user_agent(concat!("spindle/", env!("CARGO_PKG_VERSION")))
        .no_proxy()
        .dns_resolver(Arc::new(PolicyResolver::new(policy.clone())))
        .redirect(reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() >= MAX_REDIRECTS {
                return attempt.error(format!("more than {MAX_REDIRECTS} redirects"));
            }
            match redirects.check_url(attempt.url()) {
                Ok(()) => attempt.follow(),
                Err(refused) => attempt.error(refused),
            }
        }))
        .build()
        .unwrap_or_default();
    let max_timeout = config.max_timeout;
    JobKind::io(
        "http.request",
        "Calls a URL (like a webhook) and records status, headers and up to 64 KiB of body.",
        move |ctx, args: HttpArgs| run(client.clone(), policy.clone(), ctx, args),
    )
    .check(move |a: &HttpArgs| check(&checked, max_timeout, a))
    .build()
}

fn check(policy: &EgressPolicy, max_timeout: Duration, a: &HttpArgs) -> Result<(), ArgsError> {
    let url = reqwest::Url::parse(&a.url)
        .map_err(|e| ArgsError::invalid("url", format!("not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(ArgsError::invalid("url", "scheme must be http or https"));
    }
    policy
        .check_url(&url)
        .map_err(|refused| ArgsError::invalid("url", refused.to_string()))?;
    reqwest::Method::from_bytes(a.method.to_ascii_uppercase().as_bytes())
        .map_err(|_| ArgsError::invalid("method", "not an HTTP method"))?;
    for (name, value) in &a.headers {
        reqwest::header::HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| ArgsError::invalid(&format!("headers.{name}"), "not a header name"))?;
        reqwest::header::HeaderValue::from_str(value)
            .map_err(|_| ArgsError::invalid(&format!("headers.{name}"), "not a header value"))?;
    }
    let max = max_timeout.as_secs_f64();
    if !(a.timeout > 0.0 && a.timeout <= max) {
        return Err(ArgsError::invalid(
            "timeout",
            format!("must be above 0 and at most {max} seconds (the server's --http-max-timeout)"),
        ));
    }
    if let Some(status) = a.expect_status
        && !(100..=599).contains(&status)
    {
        return Err(ArgsError::invalid(
            "expect_status",
            "must be between 100 and 599",
        ));
    }
    Ok(())
}

async fn run(
    client: reqwest::Client,
    policy: Arc<EgressPolicy>,
    ctx: JobContext,
    args: HttpArgs,
) -> JobResult {
    // Checked again: the policy may have changed across a restart since Submit.
    let url = reqwest::Url::parse(&args.url).map_err(HandlerError::permanent)?;
    policy.check_url(&url).map_err(HandlerError::permanent)?;
    let method = reqwest::Method::from_bytes(args.method.to_ascii_uppercase().as_bytes())
        .map_err(HandlerError::failed)?;
    let mut request = client
        .request(method, url)
        .timeout(Duration::from_secs_f64(args.timeout));
    for (name, value) in &args.headers {
        request = request.header(name, value);
    }
    if let Some(body) = args.body {
        request = request.body(body);
    }
    ctx.progress(Progress::fraction(0.0).with_message("sending"));
    let started = std::time::Instant::now();
    let mut response = request.send().await.map_err(|e| {
        if refused_by_policy(&e) {
            HandlerError::permanent(describe(&e))
        } else {
            HandlerError::failed(describe(&e))
        }
    })?;
    let status = response.status().as_u16();
    ctx.progress(Progress::fraction(0.5).with_message(format!("status {status}, reading body")));
    let headers: BTreeMap<String, Value> = response
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), json!(String::from_utf8_lossy(v.as_bytes()))))
        .collect();
    let (body, truncated) = read_bounded(&mut response)
        .await
        .map_err(|e| HandlerError::failed(describe(&e)))?;
    let ok = match args.expect_status {
        Some(expected) => status == expected,
        None => (200..300).contains(&status),
    };
    if !ok {
        let expected = args
            .expect_status
            .map_or("2xx".to_string(), |s| s.to_string());
        let message = format!("{} answered {status}, expected {expected}", args.url);
        // A client error will not go away by asking again; a server error or a throttle may.
        let permanent = (400..500).contains(&status) && !matches!(status, 408 | 429);
        return Err(if permanent {
            HandlerError::permanent(message)
        } else {
            HandlerError::failed(message)
        });
    }
    Ok(json!({
        "status": status,
        "headers": headers,
        "body": String::from_utf8_lossy(&body),
        "body_truncated": truncated,
        "elapsed_ms": started.elapsed().as_secs_f64() * 1000.0,
    }))
}

/// Reads at most [`MAX_BODY`] bytes of the body; says whether there was more.
async fn read_bounded(response: &mut reqwest::Response) -> Result<(Vec<u8>, bool), reqwest::Error> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        let room = MAX_BODY - body.len();
        if chunk.len() > room {
            body.extend_from_slice(&chunk[..room]);
            return Ok((body, true));
        }
        body.extend_from_slice(&chunk);
    }
    Ok((body, false))
}

/// Whether the egress policy is behind a request's failure (at resolve or redirect time).
fn refused_by_policy(e: &reqwest::Error) -> bool {
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        if cause.is::<EgressRefused>() {
            return true;
        }
        source = cause.source();
    }
    false
}

/// reqwest's top-level message hides the cause ("error sending request"); add it.
fn describe(e: &reqwest::Error) -> String {
    let mut message = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}
