//! Job kinds and the registry of them. A kind is a name, a pool, a one-line description, a
//! typed args struct (serde + schemars, so the schema clients see is derived from the very
//! type the handler reads) and a handler. Library users build their own with
//! [`JobKind::io`] / [`JobKind::cpu`] and add them to the server.

use std::collections::BTreeMap;
use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;

use futures_util::FutureExt;
use schemars::JsonSchema;

use crate::model::secret::Secrets;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::exec::{Handler, JobContext, JobResult};
use crate::model::job::{Pool, RetryPolicy};
use crate::model::violation::{FieldViolation, describe};

/// What a kind's args must be: deserializable and describable as a JSON schema.
pub trait JobArgs: DeserializeOwned + JsonSchema + Send + 'static {}
impl<T: DeserializeOwned + JsonSchema + Send + 'static> JobArgs for T {}

/// Whether bad args are malformed or point somewhere they may not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArgsErrorKind {
    Invalid,
    PermissionDenied,
}

/// Why a kind refused its args.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.summary())]
pub struct ArgsError {
    pub kind: ArgsErrorKind,
    pub violations: Vec<FieldViolation>,
}

impl ArgsError {
    /// Malformed args: these fields (already named from `args`).
    pub fn from_violations(violations: Vec<FieldViolation>) -> Self {
        ArgsError {
            kind: ArgsErrorKind::Invalid,
            violations,
        }
    }

    /// Malformed args: one bad field. `field` is relative to `args`.
    pub fn invalid(field: &str, description: impl Into<String>) -> Self {
        Self::one(ArgsErrorKind::Invalid, field, description)
    }

    /// Args that name something the server may not touch.
    pub fn denied(field: &str, description: impl Into<String>) -> Self {
        Self::one(ArgsErrorKind::PermissionDenied, field, description)
    }

    fn one(kind: ArgsErrorKind, field: &str, description: impl Into<String>) -> Self {
        let field = if field.is_empty() {
            "args".to_string()
        } else {
            format!("args.{field}")
        };
        ArgsError {
            kind,
            violations: vec![FieldViolation {
                field,
                description: description.into(),
            }],
        }
    }

    fn summary(&self) -> String {
        describe(&self.violations)
    }
}

type Check = Arc<dyn Fn(&Value) -> Result<(), ArgsError> + Send + Sync>;

/// A registered job kind.
///
/// ```
/// use schemars::JsonSchema;
/// use serde::Deserialize;
/// use spindle::{ArgsError, JobKind};
///
/// /// Args of `text.upper`.
/// #[derive(Deserialize, JsonSchema)]
/// struct Upper {
///     /// The text to shout.
///     text: String,
/// }
///
/// let kind = JobKind::cpu("text.upper", "Upper-cases a text.", |ctx, a: Upper| {
///     ctx.check_cancelled()?;
///     Ok(serde_json::json!(a.text.to_uppercase()))
/// })
/// .check(|a: &Upper| {
///     if a.text.is_empty() {
///         return Err(ArgsError::invalid("text", "must not be empty"));
///     }
///     Ok(())
/// })
/// .build();
/// assert_eq!(kind.name(), "text.upper");
/// assert_eq!(kind.fields()[0].name, "text");
/// ```
#[derive(Clone)]
pub struct JobKind {
    name: String,
    description: String,
    pool: Pool,
    schema: Value,
    /// The schema's `writeOnly` fields, redacted wherever args are shown.
    secrets: Option<Arc<Secrets>>,
    check: Check,
    check_blocks: bool,
    retry: RetryPolicy,
    handler: Handler,
}

impl std::fmt::Debug for JobKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobKind")
            .field("name", &self.name)
            .field("pool", &self.pool)
            .finish_non_exhaustive()
    }
}

/// Builds a [`JobKind`] whose args are `A`.
pub struct KindBuilder<A> {
    kind: JobKind,
    /// The rules added with `check`, run in order after the args parse.
    rules: Vec<Rule<A>>,
    _args: PhantomData<fn() -> A>,
}

type Rule<A> = Box<dyn Fn(&A) -> Result<(), ArgsError> + Send + Sync>;

/// A top-level field of a kind's args, as ListKinds shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgField {
    pub name: String,
    pub json_type: String,
    pub required: bool,
    pub description: String,
}

// === impl JobKind ===

impl JobKind {
    /// An async kind, run as a tokio task: network calls, timers, waiting.
    pub fn io<A, F, Fut>(name: &str, description: &str, handler: F) -> KindBuilder<A>
    where
        A: JobArgs,
        F: Fn(JobContext, A) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = JobResult> + Send + 'static,
    {
        let handler = Arc::new(handler);
        let erased = Handler::Io(Arc::new(move |ctx: JobContext| {
            let handler = handler.clone();
            async move {
                let args = ctx.args::<A>()?;
                handler(ctx, args).await
            }
            .boxed()
        }));
        KindBuilder::new(name, description, Pool::Io, erased)
    }

    /// A blocking kind, run on the CPU pool. It should call
    /// [`JobContext::check_cancelled`] between chunks of work: it cannot be interrupted.
    pub fn cpu<A, F>(name: &str, description: &str, handler: F) -> KindBuilder<A>
    where
        A: JobArgs,
        F: Fn(&JobContext, A) -> JobResult + Send + Sync + 'static,
    {
        let erased = Handler::Cpu(Arc::new(move |ctx: JobContext| {
            let args = ctx.args::<A>()?;
            handler(&ctx, args)
        }));
        KindBuilder::new(name, description, Pool::Cpu, erased)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn description(&self) -> &str {
        &self.description
    }

    pub fn pool(&self) -> Pool {
        self.pool
    }

    /// The JSON schema of the args.
    pub fn schema(&self) -> &Value {
        &self.schema
    }

    /// The args fields that are never shown back (`writeOnly` in the schema).
    pub fn secrets(&self) -> Option<&Secrets> {
        self.secrets.as_deref()
    }

    /// The retry policy of jobs that do not bring their own.
    pub fn retry(&self) -> &RetryPolicy {
        &self.retry
    }

    pub(crate) fn handler(&self) -> &Handler {
        &self.handler
    }

    /// Checks args against the type and the kind's own rules. Kinds whose checks touch
    /// the file system run them on tokio's blocking pool, off the API's worker threads.
    pub async fn validate(&self, args: &Value) -> Result<(), ArgsError> {
        if !self.check_blocks {
            return (self.check)(args);
        }
        let (check, args) = (self.check.clone(), args.clone());
        tokio::task::spawn_blocking(move || check(&args))
            .await
            .unwrap_or_else(|_| Err(ArgsError::invalid("", "argument check failed")))
    }

    /// The top-level fields of the args, from the schema.
    pub fn fields(&self) -> Vec<ArgField> {
        schema_fields(&self.schema)
    }
}

// === impl KindBuilder ===

impl<A: JobArgs> KindBuilder<A> {
    fn new(name: &str, description: &str, pool: Pool, handler: Handler) -> Self {
        let schema = serde_json::to_value(schemars::schema_for!(A)).unwrap_or(Value::Null);
        let check: Check = Arc::new(|args| parse_args::<A>(args).map(drop));
        KindBuilder {
            rules: Vec::new(),
            kind: JobKind {
                name: name.to_string(),
                description: description.to_string(),
                pool,
                secrets: Secrets::from_schema(&schema).map(Arc::new),
                schema,
                check,
                check_blocks: false,
                retry: RetryPolicy::default(),
                handler,
            },
            _args: PhantomData,
        }
    }

    /// Adds a rule the type alone cannot express (ranges, formats), run at Submit after the
    /// args parse and after the rules added before it; the first refusal answers.
    pub fn check(
        mut self,
        rule: impl Fn(&A) -> Result<(), ArgsError> + Send + Sync + 'static,
    ) -> Self {
        self.rules.push(Box::new(rule));
        self
    }

    /// Like [`check`](Self::check), for rules that do blocking I/O (file lookups).
    pub fn check_blocking(
        mut self,
        rule: impl Fn(&A) -> Result<(), ArgsError> + Send + Sync + 'static,
    ) -> Self {
        self.kind.check_blocks = true;
        self.check(rule)
    }

    /// The retry policy for jobs of this kind that do not bring their own (default: three
    /// attempts, see [`RetryPolicy::default`]).
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.kind.retry = policy;
        self
    }

    pub fn build(self) -> JobKind {
        let mut kind = self.kind;
        if !self.rules.is_empty() {
            let rules = self.rules;
            kind.check = Arc::new(move |args| {
                let args = parse_args::<A>(args)?;
                rules.iter().try_for_each(|rule| rule(&args))
            });
        }
        kind
    }
}

impl<A: JobArgs> From<KindBuilder<A>> for JobKind {
    fn from(builder: KindBuilder<A>) -> Self {
        builder.build()
    }
}

/// Deserializes args, naming the offending field on failure.
pub fn parse_args<A: DeserializeOwned>(args: &Value) -> Result<A, ArgsError> {
    serde_path_to_error::deserialize(args).map_err(|e| {
        let message = e.inner().to_string();
        let mut path = e.path().to_string();
        if path == "." {
            path.clear();
        }
        // serde reports a missing or unknown field at its parent; name the field itself.
        if let Some(name) = quoted_field(&message, &["missing field `", "unknown field `"])
            && path.rsplit('.').next() != Some(name)
        {
            path = if path.is_empty() {
                name.to_string()
            } else {
                format!("{path}.{name}")
            };
        }
        ArgsError::invalid(&path, plain(&message))
    })
}

/// serde's message in words a client in any language reads: `invalid type: string
/// "soon", expected f64` becomes `expected a number, got the string "soon"`.
fn plain(message: &str) -> String {
    let Some(rest) = message.strip_prefix("invalid type: ") else {
        return message.to_string();
    };
    let Some((got, want)) = rest.rsplit_once(", expected ") else {
        return message.to_string();
    };
    let want = match want {
        "f64" | "f32" => "a number",
        "u8" | "u16" | "u32" | "u64" | "u128" | "usize" => "a whole number, 0 or more",
        "i8" | "i16" | "i32" | "i64" | "i128" | "isize" => "a whole number",
        "a sequence" => "a list",
        "a map" => "an object",
        w if w.starts_with("struct ") => "an object",
        w => w,
    };
    let got = got.replace('`', "");
    let got = match got.split_once(' ') {
        Some(("string", text)) => format!("the string {text}"),
        Some(("integer" | "floating", _)) => {
            format!("the number {}", got.rsplit(' ').next().unwrap_or_default())
        }
        Some(("boolean", value)) => value.to_string(),
        _ => got,
    };
    format!("expected {want}, got {got}")
}

fn quoted_field<'m>(message: &'m str, prefixes: &[&str]) -> Option<&'m str> {
    prefixes.iter().find_map(|prefix| {
        let rest = message.strip_prefix(prefix)?;
        rest.split('`').next()
    })
}

pub fn schema_fields(schema: &Value) -> Vec<ArgField> {
    let required: Vec<&str> = schema["required"]
        .as_array()
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let Some(properties) = schema["properties"].as_object() else {
        return Vec::new();
    };
    properties
        .iter()
        .map(|(name, prop)| ArgField {
            name: name.clone(),
            json_type: json_type(schema, prop),
            required: required.contains(&name.as_str()),
            description: prop["description"].as_str().unwrap_or_default().to_string(),
        })
        .collect()
}

/// A property's JSON type, following a `$ref` into `$defs` once and leaving out "null".
fn json_type(schema: &Value, prop: &Value) -> String {
    let prop = match prop["$ref"].as_str() {
        Some(r) => &schema["$defs"][r.rsplit('/').next().unwrap_or_default()],
        None => prop,
    };
    match &prop["type"] {
        Value::String(t) => t.clone(),
        Value::Array(types) => {
            let types: Vec<&str> = types
                .iter()
                .filter_map(Value::as_str)
                .filter(|t| *t != "null")
                .collect();
            types.join("|")
        }
        _ if prop.get("enum").is_some() || prop.get("oneOf").is_some() => "string".into(),
        _ => "any".into(),
    }
}

/// The kinds a server can run, by name.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    kinds: BTreeMap<String, Arc<JobKind>>,
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a kind, replacing any kind of the same name.
    pub fn register(&mut self, kind: impl Into<JobKind>) {
        let kind = kind.into();
        self.kinds.insert(kind.name.clone(), Arc::new(kind));
    }

    pub fn get(&self, name: &str) -> Option<&Arc<JobKind>> {
        self.kinds.get(name)
    }

    /// All kinds, sorted by name.
    pub fn kinds(&self) -> impl Iterator<Item = &Arc<JobKind>> {
        self.kinds.values()
    }

    pub fn names(&self) -> Vec<String> {
        self.kinds.keys().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use serde_json::json;

    /// Test args.
    #[derive(Deserialize, JsonSchema)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Args {
        /// How many.
        count: u32,
        nested: Option<Inner>,
    }

    #[derive(Deserialize, JsonSchema)]
    #[allow(dead_code)]
    struct Inner {
        depth: u8,
    }

    fn kind() -> JobKind {
        JobKind::cpu("t.count", "counts", |_, a: Args| Ok(json!(a.count)))
            .check(|a| {
                if a.count == 0 {
                    return Err(ArgsError::invalid("count", "must be at least 1"));
                }
                Ok(())
            })
            .build()
    }

    #[test]
    fn type_errors_read_in_plain_words() {
        let cases = [
            (
                json!({"count": "soon"}),
                "expected a whole number, 0 or more, got the string \"soon\"",
            ),
            (
                json!({"count": 1.5}),
                "expected a whole number, 0 or more, got the number 1.5",
            ),
            (
                json!({"count": null}),
                "expected a whole number, 0 or more, got null",
            ),
            (
                json!({"count": 1, "nested": 3}),
                "expected an object, got the number 3",
            ),
        ];
        for (args, expected) in cases {
            let error = parse_args::<Args>(&args).err().expect("refused");
            assert_eq!(error.violations[0].description, expected, "{args}");
        }
    }

    #[tokio::test]
    async fn every_added_rule_runs_in_order() {
        let k = JobKind::cpu("t.two", "two rules", |_, a: Args| Ok(json!(a.count)))
            .check(|a| match a.count {
                0 => Err(ArgsError::invalid("count", "must be at least 1")),
                _ => Ok(()),
            })
            .check(|a| match a.count {
                c if c > 10 => Err(ArgsError::invalid("count", "must be at most 10")),
                _ => Ok(()),
            })
            .build();
        let low = k.validate(&json!({"count": 0})).await.unwrap_err();
        assert!(low.to_string().contains("at least 1"), "{low}");
        let high = k.validate(&json!({"count": 11})).await.unwrap_err();
        assert!(
            high.to_string().contains("at most 10"),
            "the second rule runs: {high}"
        );
        assert!(k.validate(&json!({"count": 5})).await.is_ok());
    }

    fn field_of(result: Result<(), ArgsError>) -> String {
        result.unwrap_err().violations[0].field.clone()
    }

    #[tokio::test]
    async fn violations_name_the_field() {
        let k = kind();
        assert!(k.validate(&json!({"count": 2})).await.is_ok());
        assert_eq!(field_of(k.validate(&json!({})).await), "args.count");
        assert_eq!(
            field_of(k.validate(&json!({"count": "x"})).await),
            "args.count"
        );
        assert_eq!(
            field_of(k.validate(&json!({"count": 1, "bogus": 1})).await),
            "args.bogus"
        );
        assert_eq!(
            field_of(
                k.validate(&json!({"count": 1, "nested": {"depth": 999}}))
                    .await
            ),
            "args.nested.depth"
        );
        assert_eq!(
            field_of(k.validate(&json!({"count": 0})).await),
            "args.count"
        );
    }

    #[test]
    fn fields_come_from_the_schema() {
        let fields = kind().fields();
        let count = fields.iter().find(|f| f.name == "count").unwrap();
        assert_eq!(count.json_type, "integer");
        assert!(count.required);
        assert_eq!(count.description, "How many.");
        let nested = fields.iter().find(|f| f.name == "nested").unwrap();
        assert!(!nested.required);
    }
}
