//! `spindle bench --smoke` keeps working: every workload completes against both stores
//! and its figures are sane (finite, positive, percentiles in order). Never a timing
//! threshold: the figures themselves are for BENCHMARKS.md, not for tests.

use std::collections::BTreeSet;
use std::process::Command;

use serde_json::Value;

fn figure(rows: &[Value], workload: &str, what: &str, store: &str) -> f64 {
    rows.iter()
        .find(|r| r["workload"] == workload && r["what"] == what && r["store"] == store)
        .and_then(|r| r["runs"][0].as_f64())
        .unwrap_or_else(|| panic!("no figure {workload} {what:?} on {store}"))
}

#[test]
fn smoke_run_covers_every_workload_on_both_stores_with_sane_figures() {
    let out = Command::new(env!("CARGO_BIN_EXE_spindle"))
        .args(["bench", "--smoke", "--json"])
        .output()
        .expect("run spindle bench");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench failed: {stderr}");
    let report: Value = serde_json::from_slice(&out.stdout).expect("a JSON report");
    let rows = report["rows"].as_array().expect("rows");
    println!("{}", serde_json::to_string_pretty(&report).unwrap());

    let seen: BTreeSet<(String, String)> = rows
        .iter()
        .map(|r| {
            (
                r["workload"].as_str().unwrap().into(),
                r["store"].as_str().unwrap().into(),
            )
        })
        .collect();
    for workload in ["W1", "W2", "W3", "W4", "W5", "W6", "W7", "W8", "W9"] {
        for store in ["memory", "sqlite"] {
            assert!(
                seen.contains(&(workload.into(), store.into())),
                "{workload} on {store}"
            );
        }
    }
    for row in rows {
        let value = row["runs"][0].as_f64().expect("a number");
        // Memory growth may be 0 at smoke sizes (the allocator had the pages already).
        let least = if row["unit"] == "bytes" {
            0.0
        } else {
            f64::MIN_POSITIVE
        };
        assert!(
            value.is_finite() && value >= least,
            "not a sane figure: {row}"
        );
    }
    for store in ["memory", "sqlite"] {
        let (p50, p99) = (
            figure(rows, "W3", "round trip p50", store),
            figure(rows, "W3", "round trip p99", store),
        );
        assert!(p50 <= p99, "W3 percentiles out of order on {store}");
        let seen = figure(
            rows,
            "W4",
            "progress events seen per watcher, 20 watchers",
            store,
        );
        assert!(seen >= 1.0, "watchers saw progress on {store}");
        let limit = figure(
            rows,
            "W4",
            "limit (Bench/Fanout): events seen per watcher, 20 watchers",
            store,
        );
        assert!(limit >= 1.0, "Fanout subscribers saw events on {store}");
        for how in ["on the same instant", "spread over the second"] {
            let what = |s: &str| format!("200 schedules every 1 s, {how}: {s}");
            let (p50, p99) = (
                figure(rows, "W9", &what("fire lag p50"), store),
                figure(rows, "W9", &what("fire lag p99"), store),
            );
            assert!(p50 <= p99, "W9 percentiles out of order on {store}, {how}");
            assert!(
                figure(rows, "W9", &what("fires"), store) >= 180.0,
                "W9 fired on {store}"
            );
        }
    }
}

#[test]
fn concurrency_flag_picks_the_levels_w1_and_w5_run_at() {
    let out = Command::new(env!("CARGO_BIN_EXE_spindle"))
        .args(["bench", "--smoke", "--json", "--only", "W1"])
        .args(["--store", "memory", "--concurrency", "3,5"])
        .output()
        .expect("run spindle bench");
    assert!(
        out.status.success(),
        "bench failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).expect("a JSON report");
    let rows = report["rows"].as_array().expect("rows");
    let levels: Vec<&str> = rows
        .iter()
        .filter(|r| r["workload"] == "W1")
        .filter_map(|r| r["what"].as_str())
        .filter(|what| what.starts_with("submit, one call per job"))
        .collect();
    assert_eq!(
        levels,
        [
            "submit, one call per job, C=3",
            "submit, one call per job, C=5"
        ]
    );
    assert!(figure(rows, "W5", "W1 / W5, C=5", "memory") > 0.0);

    let refused = Command::new(env!("CARGO_BIN_EXE_spindle"))
        .args(["bench", "--smoke", "--concurrency", "0"])
        .output()
        .expect("run spindle bench");
    assert!(!refused.status.success(), "--concurrency 0 is refused");
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--concurrency"));
}
