//! The benchmark's results: one row per workload, store and setting, with every run's
//! figure kept; printed as a table with the median, min and max, and written as JSON and
//! as markdown (BENCHMARKS.md).

use std::fmt::Write as _;

use serde::Serialize;

/// One measured figure over several runs.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// "W1", "W2", ...
    pub workload: String,
    /// What was measured, e.g. "submit, one call per job, C=16".
    pub what: String,
    /// "memory", "sqlite" or "remote".
    pub store: String,
    /// "jobs/s", "µs", "ratio", "KiB/job", ...
    pub unit: String,
    /// Each run's figure, in run order.
    pub runs: Vec<f64>,
}

impl Row {
    pub fn median(&self) -> f64 {
        let mut sorted = self.runs.clone();
        sorted.sort_by(f64::total_cmp);
        match sorted.len() {
            0 => f64::NAN,
            n if !n.is_multiple_of(2) => sorted[n / 2],
            n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
        }
    }

    pub fn min(&self) -> f64 {
        self.runs.iter().copied().fold(f64::INFINITY, f64::min)
    }

    pub fn max(&self) -> f64 {
        self.runs.iter().copied().fold(f64::NEG_INFINITY, f64::max)
    }
}

/// A whole benchmark run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// When it ran (UTC, RFC 3339).
    pub date: String,
    /// Cores, memory, OS, as read from the machine.
    pub machine: String,
    /// The settings: runs, sizes, smoke or full.
    pub settings: String,
    pub rows: Vec<Row>,
}

/// A figure with sensible precision: 12,345 / 123.4 / 0.123.
pub fn figure(x: f64) -> String {
    if !x.is_finite() {
        return "n/a".into();
    }
    if x.abs() >= 1000.0 {
        let whole = x.round() as i64;
        let digits = whole.abs().to_string();
        let mut grouped = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i).is_multiple_of(3) {
                grouped.push(',');
            }
            grouped.push(c);
        }
        if whole < 0 {
            format!("-{grouped}")
        } else {
            grouped
        }
    } else if x.abs() >= 100.0 {
        format!("{x:.0}")
    } else if x.abs() >= 1.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.3}")
    }
}

impl Report {
    /// The rows as a markdown table (median, then min-max over the runs).
    pub fn markdown_table(&self) -> String {
        let mut out = String::from(
            "| workload | what | store | median | min - max | unit | runs |\n\
             | --- | --- | --- | ---: | ---: | --- | ---: |\n",
        );
        for row in &self.rows {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} - {} | {} | {} |",
                row.workload,
                row.what,
                row.store,
                figure(row.median()),
                figure(row.min()),
                figure(row.max()),
                row.unit,
                row.runs.len()
            );
        }
        out
    }

    /// A plain-text table for a terminal.
    pub fn text_table(&self) -> String {
        let mut out = format!("{}\n{}\n{}\n\n", self.date, self.machine, self.settings);
        let _ = writeln!(
            out,
            "{:<4} {:<52} {:<7} {:>12} {:>25} unit",
            "", "what", "store", "median", "min - max"
        );
        for row in &self.rows {
            let range = format!("{} - {}", figure(row.min()), figure(row.max()));
            let _ = writeln!(
                out,
                "{:<4} {:<52} {:<7} {:>12} {:>25} {}",
                row.workload,
                row.what,
                row.store,
                figure(row.median()),
                range,
                row.unit
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_figures() {
        let row = Row {
            workload: "W1".into(),
            what: "x".into(),
            store: "memory".into(),
            unit: "jobs/s".into(),
            runs: vec![3.0, 1.0, 2.0, 10.0],
        };
        assert_eq!(row.median(), 2.5);
        assert_eq!((row.min(), row.max()), (1.0, 10.0));
        assert_eq!(figure(1_234_567.4), "1,234,567");
        assert_eq!(figure(123.46), "123");
        assert_eq!(figure(12.34), "12.3");
        assert_eq!(figure(0.1234), "0.123");
        assert_eq!(figure(f64::NAN), "n/a");
    }
}
