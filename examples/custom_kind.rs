//! Registering your own job kinds from Rust: a typed args struct (serde + schemars, so
//! ListKinds shows its schema), a handler, optional extra checks, and the server.
//!
//! Run: `cargo run --example custom_kind`, then for instance
//! `grpcurl -plaintext -d '{"kind":"text.wordcount","args":{"text":"a b a"}}' 127.0.0.1:50051 spindle.v1.JobService/Submit`

use std::collections::BTreeMap;
use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;
use spindle::{ArgsError, HandlerError, JobContext, JobKind, JobResult, ServeConfig, Spindle};

/// Args of `text.wordcount`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct WordCountArgs {
    /// The text to count words in.
    text: String,
    /// Only report words seen at least this often (default 1).
    #[serde(default = "one")]
    min_count: usize,
}

fn one() -> usize {
    1
}

/// A CPU kind: a blocking handler on the rayon pool, checking for cancellation as it goes.
fn word_count(ctx: &JobContext, args: WordCountArgs) -> JobResult {
    let words: Vec<&str> = args.text.split_whitespace().collect();
    let mut counts = BTreeMap::new();
    for (i, word) in words.iter().enumerate() {
        *counts.entry(word.to_lowercase()).or_insert(0usize) += 1;
        if i % 10_000 == 0 {
            ctx.check_cancelled()?;
            ctx.report(i as u64, words.len() as u64);
        }
    }
    counts.retain(|_, n| *n >= args.min_count);
    Ok(json!({ "words": words.len(), "counts": counts }))
}

/// Args of `greet`.
#[derive(Deserialize, JsonSchema)]
struct GreetArgs {
    /// Who to greet.
    name: String,
}

/// An IO kind: an async handler on tokio that logs into the job's event log.
async fn greet(ctx: JobContext, args: GreetArgs) -> JobResult {
    ctx.log(format!("thinking about {}", args.name));
    tokio::select! {
        _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        _ = ctx.cancelled() => return Err(HandlerError::Cancelled),
    }
    Ok(json!({ "greeting": format!("hello, {}", args.name) }))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    spindle::telemetry::init();
    let wordcount = JobKind::cpu("text.wordcount", "Counts the words of a text.", word_count)
        .check(|a: &WordCountArgs| {
            if a.min_count == 0 {
                return Err(ArgsError::invalid("min_count", "must be at least 1"));
            }
            Ok(())
        });
    let greet = JobKind::io("greet", "Greets someone, slowly.", greet);
    // The address: the first argument, else SPINDLE_ADDR, else the default.
    let addr = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("SPINDLE_ADDR").ok())
        .unwrap_or_else(|| "127.0.0.1:50051".into());
    let listener = match tokio::net::TcpListener::bind(&addr).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!(
                "custom_kind: cannot listen on {addr}: {e}. Is another Spindle running there? \
                 Give another address: cargo run --example custom_kind -- 127.0.0.1:50052"
            );
            std::process::exit(1);
        }
    };
    eprintln!("custom_kind: serving on {addr} with text.wordcount and greet; Ctrl-C stops it");
    Spindle::new(ServeConfig::default())
        .with_kind(wordcount)
        .with_kind(greet)
        .serve(listener, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
