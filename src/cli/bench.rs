//! `spindle bench`: flags, running the harness, and writing its results.

use std::path::PathBuf;

use clap::Args;

use crate::bench::target::StoreKind;
use crate::bench::{BenchConfig, Sizes, WORKLOADS, report::Report};

/// Flags of `spindle bench`.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Measure the server at this URL (started with --bench-echo for W5) instead of
    /// servers started in this process.
    #[arg(long, value_name = "URL")]
    pub target: Option<String>,
    /// The in-process servers' stores: memory, sqlite or both.
    #[arg(long, default_value = "both", value_parser = ["memory", "sqlite", "both"])]
    pub store: String,
    /// Runs of each workload; figures are the median (min and max are shown too).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=100))]
    pub runs: u16,
    /// Small sizes and one run: a few seconds per workload, for CI.
    #[arg(long)]
    pub smoke: bool,
    /// Only these workloads (comma-separated: W1,W2,W3,W4,W6,W7,W8,W9; W5 runs with W1).
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// The client concurrencies W1 and W5 run at (comma-separated; default 1,16,256, or
    /// 1,16 with --smoke).
    #[arg(long, value_delimiter = ',', value_parser = clap::value_parser!(u16).range(1..=4096))]
    pub concurrency: Vec<u16>,
    /// Also write the results as JSON to this file (--json prints them instead of the table).
    #[arg(long, value_name = "FILE")]
    pub json_out: Option<PathBuf>,
    /// Also write the results as markdown (BENCHMARKS.md's table) to this file.
    #[arg(long, value_name = "FILE")]
    pub markdown_out: Option<PathBuf>,
}

impl BenchArgs {
    fn config(&self) -> Result<BenchConfig, String> {
        if let Some(unknown) = self
            .only
            .iter()
            .find(|w| !WORKLOADS.iter().any(|k| k.eq_ignore_ascii_case(w)))
        {
            return Err(format!(
                "--only: no workload {unknown:?} (known: {})",
                WORKLOADS.join(", ")
            ));
        }
        let stores = match self.store.as_str() {
            "memory" => vec![StoreKind::Memory],
            "sqlite" => vec![StoreKind::Sqlite],
            _ => vec![StoreKind::Memory, StoreKind::Sqlite],
        };
        let mut sizes = if self.smoke {
            Sizes::smoke()
        } else {
            Sizes::full()
        };
        if !self.concurrency.is_empty() {
            sizes.concurrency = self.concurrency.iter().map(|&c| usize::from(c)).collect();
        }
        Ok(BenchConfig {
            server: self.target.clone(),
            stores,
            runs: if self.smoke {
                1
            } else {
                usize::from(self.runs)
            },
            sizes,
            only: self.only.clone(),
            smoke: self.smoke,
        })
    }
}

/// Runs the harness; returns the exit code (0, 1 if a workload failed, 64 bad flags).
pub async fn run(args: BenchArgs, json: bool) -> u8 {
    let config = match args.config() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("spindle bench: {e}");
            return super::client::exit::USAGE;
        }
    };
    let report = match crate::bench::run(&config).await {
        Ok(report) => report,
        Err(e) => {
            eprintln!("spindle bench: {e}");
            return 1;
        }
    };
    if json {
        out!("{}", serde_json::to_string(&report).unwrap_or_default());
    } else {
        out!("{}", report.text_table());
    }
    match write(&args, &report) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("spindle bench: {e}");
            1
        }
    }
}

fn write(args: &BenchArgs, report: &Report) -> Result<(), String> {
    if let Some(path) = &args.json_out {
        let json = serde_json::to_string_pretty(report).map_err(|e| e.to_string())?;
        std::fs::write(path, json + "\n").map_err(|e| format!("{}: {e}", path.display()))?;
    }
    if let Some(path) = &args.markdown_out {
        let text = format!(
            "Measured {} on {}; {}.\n\n{}",
            report.date,
            report.machine,
            report.settings,
            report.markdown_table()
        );
        std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(())
}
