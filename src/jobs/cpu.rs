//! `demo.cpu` (CPU): burns `rounds` rounds of BLAKE3 over a 64-byte block, reporting
//! progress on every round. Used by benchmarks and to saturate the CPU pool in tests; the
//! per-round report shows that reporting is cheap and coalesced.

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;

use super::registry::{ArgsError, JobKind};
use crate::exec::{JobContext, JobResult};

/// Rounds between two cancellation checks.
const CHECK_EVERY: u64 = 1024;
/// The most rounds accepted (about a minute of one core on this machine).
const MAX_ROUNDS: u64 = 1_000_000_000;

/// Arguments of `demo.cpu`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CpuArgs {
    /// Hash rounds to compute (0 to 1e9).
    pub rounds: u64,
}

/// The kind.
pub fn kind() -> JobKind {
    JobKind::cpu(
        "demo.cpu",
        "Computes `rounds` chained BLAKE3 hashes of a 64-byte block; for load tests.",
        run,
    )
    .check(|a: &CpuArgs| {
        if a.rounds > MAX_ROUNDS {
            return Err(ArgsError::invalid("rounds", "must be at most 1000000000"));
        }
        Ok(())
    })
    .build()
}

fn run(ctx: &JobContext, args: CpuArgs) -> JobResult {
    let digest = burn(args.rounds, |done| {
        ctx.report(done, args.rounds);
        if done % CHECK_EVERY == 0 {
            ctx.check_cancelled()?;
        }
        Ok::<(), crate::exec::HandlerError>(())
    })?;
    Ok(json!({ "rounds": args.rounds, "digest": digest }))
}

/// Chains `rounds` BLAKE3 hashes, calling `after_round` after each; the bare loop used by
/// the benchmark passes a no-op.
pub fn burn<E>(
    rounds: u64,
    mut after_round: impl FnMut(u64) -> Result<(), E>,
) -> Result<String, E> {
    let mut block = [0u8; 64];
    for done in 1..=rounds {
        let hash = blake3::hash(&block);
        block[..32].copy_from_slice(hash.as_bytes());
        after_round(done)?;
    }
    Ok(blake3::hash(&block).to_hex().to_string())
}
