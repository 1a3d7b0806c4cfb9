//! The Python client's pytest suite (clients/python/tests) against this build's real
//! `spindle` binary: every built-in kind, watch and resume across a restart, cancel,
//! long-poll, error codes, and the FastAPI example. Skips, saying so, when Python or the
//! suite's packages are missing; fails instead when CI is set.

mod common;

use std::path::Path;
use std::process::Command;

const PACKAGES: &str = "import grpc, grpc_tools, grpc_status, pytest, fastapi, httpx2";

/// The Python to use (SPINDLE_PYTHON, else python3), or None when the test should skip.
fn python() -> Option<String> {
    let python = std::env::var("SPINDLE_PYTHON").unwrap_or_else(|_| "python3".into());
    let ready = Command::new(&python)
        .args(["-c", PACKAGES])
        .output()
        .is_ok_and(|out| out.status.success());
    let need = format!(
        "{python} with the suite's packages (pip install -r clients/python/requirements-test.txt)"
    );
    common::outside_tool(ready, "Python client suite", &need).then_some(python)
}

#[test]
fn python_client_suite_passes_against_the_real_server() {
    let Some(python) = python() else { return };
    let package = Path::new(env!("CARGO_MANIFEST_DIR")).join("clients/python");
    let out = Command::new(python)
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .arg(&package)
        .current_dir(&package)
        .env("SPINDLE_BIN", env!("CARGO_BIN_EXE_spindle"))
        .output()
        .expect("run pytest");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the Python suite failed:\n{stdout}");
    let summary = stdout.lines().last().unwrap_or_default();
    assert!(
        summary.contains(" passed") && !summary.contains("skipped"),
        "every Python test ran: {summary}"
    );
}
