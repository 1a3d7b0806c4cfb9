//! Compiles proto/ with protox (pure Rust, no system protoc) and keeps the encoded
//! file descriptor set so the server can offer reflection to grpcurl.

use std::{env, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    println!("cargo:rerun-if-changed=proto");
    let mut compiler = protox::Compiler::new(["proto"])?;
    // Imports (google/protobuf/*) must be in the set, or reflection cannot describe our types.
    compiler.include_imports(true).include_source_info(true);
    compiler.open_files(["spindle/v1/spindle.proto", "spindle/v1/bench.proto"])?;
    std::fs::write(
        out_dir.join("spindle_descriptor.bin"),
        compiler.encode_file_descriptor_set(),
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(compiler.file_descriptor_set())?;
    Ok(())
}
