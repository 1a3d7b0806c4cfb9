//! Compiles proto/ with protox (pure Rust, no system protoc) and keeps the encoded file
//! descriptor sets so the server can offer reflection to grpcurl. Two passes: the public
//! `spindle.v1` (jobs and schedules) with the worker protocol `spindle.worker.v1`, then the benchmark's
//! `spindle.bench.v1` into a folder of its own, reusing the first pass's types. google.rpc
//! types come from tonic-types.

use std::{env, path::PathBuf};

fn descriptors(files: &[&str]) -> Result<protox::Compiler, Box<dyn std::error::Error>> {
    let mut compiler = protox::Compiler::new(["proto"])?;
    // Imports (google/protobuf/*) must be in the set, or reflection cannot describe our types.
    compiler.include_imports(true).include_source_info(true);
    compiler.open_files(files)?;
    Ok(compiler)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    println!("cargo:rerun-if-changed=proto");

    let public = descriptors(&[
        "spindle/v1/spindle.proto",
        "spindle/v1/schedule.proto",
        "spindle/worker/v1/worker.proto",
    ])?;
    std::fs::write(
        out_dir.join("spindle_descriptor.bin"),
        public.encode_file_descriptor_set(),
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .extern_path(".google.rpc", "::tonic_types::pb")
        .compile_fds(public.file_descriptor_set())?;

    let bench = descriptors(&["spindle/bench/v1/bench.proto"])?;
    std::fs::write(
        out_dir.join("bench_descriptor.bin"),
        bench.encode_file_descriptor_set(),
    )?;
    let bench_out = out_dir.join("bench");
    std::fs::create_dir_all(&bench_out)?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .out_dir(&bench_out)
        .extern_path(".google.rpc", "::tonic_types::pb")
        .extern_path(".spindle.v1", "crate::pb")
        .compile_fds(bench.file_descriptor_set())?;
    Ok(())
}
