//! The generated protobuf types, gRPC client and server of `spindle.v1`, ([`worker`]) the
//! worker protocol `spindle.worker.v1`, the encoded file descriptor set that reflection
//! serves (both packages), ([`bench`]) the benchmark's own
//! `spindle.bench.v1`, and ([`json`]) the Struct <-> JSON helpers that the API, the CLI
//! and the bench all use.

pub use generated::*;

/// The code tonic generates from proto/spindle/v1; not ours to lint.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
mod generated {
    tonic::include_proto!("spindle.v1");
}

/// `spindle.worker.v1`: the protocol worker processes speak, in any language.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod worker {
    tonic::include_proto!("spindle.worker.v1");
}

/// `spindle.bench.v1`: the no-work reference RPCs `spindle bench` measures against, served
/// only when asked for.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod bench {
    include!(concat!(env!("OUT_DIR"), "/bench/spindle.bench.v1.rs"));

    /// What reflection needs to describe `spindle.bench.v1`, imports included.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("bench_descriptor");
}

pub mod json;

/// Everything reflection needs to describe `spindle.v1`, google.protobuf imports included.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("spindle_descriptor");
