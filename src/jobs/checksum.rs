//! `file.checksum` (CPU): the SHA-256 or BLAKE3 digest of a file in the files directory,
//! read in 1 MiB chunks with progress by bytes.

use std::io::Read;
use std::sync::Arc;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;
use sha2::Digest;

use super::files::FilesDir;
use super::registry::JobKind;
use crate::exec::{JobContext, JobResult};

const CHUNK: usize = 1 << 20;

/// Digest algorithms.
#[derive(Debug, Default, Clone, Copy, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Algorithm {
    #[default]
    Sha256,
    Blake3,
}

/// Arguments of `file.checksum`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ChecksumArgs {
    /// The file, relative to the server's files directory.
    pub path: String,
    /// "sha256" (default) or "blake3".
    #[serde(default)]
    pub algorithm: Algorithm,
}

/// The kind, confined to `files`.
pub fn kind(files: Arc<FilesDir>) -> JobKind {
    let checked = files.clone();
    JobKind::cpu(
        "file.checksum",
        "Computes the SHA-256 or BLAKE3 digest of a file in the files directory.",
        move |ctx, args: ChecksumArgs| run(&files, ctx, args),
    )
    .check_blocking(move |a: &ChecksumArgs| checked.input("path", &a.path).map(drop))
    .build()
}

fn run(files: &FilesDir, ctx: &JobContext, args: ChecksumArgs) -> JobResult {
    // Open again: the file system may have changed since Submit.
    let mut file = files
        .input("path", &args.path)
        .map_err(crate::exec::HandlerError::permanent)?;
    let size = file.metadata()?.len();
    let mut hasher = Hasher::new(args.algorithm);
    let mut buf = vec![0u8; CHUNK];
    let mut done = 0u64;
    loop {
        ctx.check_cancelled()?;
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        done += n as u64;
        ctx.report(done, size.max(done));
    }
    Ok(json!({
        "path": args.path,
        "algorithm": hasher.name(),
        "digest": hasher.finish(),
        "size": done,
    }))
}

enum Hasher {
    Sha256(sha2::Sha256),
    Blake3(Box<blake3::Hasher>),
}

impl Hasher {
    fn new(algorithm: Algorithm) -> Self {
        match algorithm {
            Algorithm::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
            Algorithm::Blake3 => Hasher::Blake3(Box::default()),
        }
    }

    fn update(&mut self, bytes: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(bytes),
            Hasher::Blake3(h) => {
                h.update(bytes);
            }
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Hasher::Sha256(_) => "sha256",
            Hasher::Blake3(_) => "blake3",
        }
    }

    fn finish(self) -> String {
        match self {
            Hasher::Sha256(h) => hex(&h.finalize()),
            Hasher::Blake3(h) => h.finalize().to_hex().to_string(),
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
