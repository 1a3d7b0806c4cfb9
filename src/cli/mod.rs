//! The command line: `spindle serve` (the default with no subcommand, so `cargo run
//! --release` starts the service) and the client subcommands (submit, watch, status,
//! cancel, jobs, kinds). Every flag of serve is also read from an environment variable;
//! `--server`, `--namespace` and `--json` go before or after the subcommand.

/// `println!` for CLI output that ends the process quietly when stdout is closed early
/// (`spindle jobs | head`) instead of panicking on the broken pipe.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::cli::write_line(format_args!($($arg)*))
    };
}

pub mod auth;
pub mod bench;
pub mod client;
pub(crate) mod render;
pub mod schedule;
mod serve;
pub mod watch;

use std::time::Duration;

use clap::{Args, Parser, Subcommand};

pub use serve::{ServeArgs, parse_duration, parse_queue_limit};

/// Spindle: a gRPC job-scheduling service, and its command-line client.
#[derive(Debug, Parser)]
#[command(name = "spindle", version, about)]
pub struct Cli {
    /// The server the client commands talk to.
    #[arg(
        long,
        global = true,
        env = "SPINDLE_SERVER",
        default_value = "http://127.0.0.1:50051"
    )]
    pub server: String,
    /// Print JSON instead of text (one object per line for lists and watch events).
    #[arg(long, global = true)]
    pub json: bool,
    /// The namespace the client commands act in (default: "default", or the only
    /// namespace the token may use).
    #[arg(long, global = true, env = "SPINDLE_NAMESPACE", default_value = "")]
    pub namespace: String,
    /// The token to call with (see `spindle auth add`); sent as `authorization: Bearer`.
    #[arg(long, global = true, env = "SPINDLE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// The CA that signed the server's certificate (PEM); implies https.
    #[arg(long, global = true, env = "SPINDLE_CA")]
    pub ca: Option<std::path::PathBuf>,
    /// This client's certificate (PEM), for a server that requires one (mTLS).
    #[arg(long, global = true, env = "SPINDLE_CERT", requires = "key")]
    pub cert: Option<std::path::PathBuf>,
    /// The key of --cert (PEM).
    #[arg(long, global = true, env = "SPINDLE_KEY", requires = "cert")]
    pub key: Option<std::path::PathBuf>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// What to do.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (the default).
    Serve(Box<ServeArgs>),
    /// Submit a job and print its id.
    Submit(SubmitArgs),
    /// Follow a job to its end: a progress bar on a terminal, lines otherwise. Exits 0 if it
    /// succeeded, 1 if it failed, 2 if it was cancelled.
    Watch(IdArgs),
    /// Show a job.
    Status(StatusArgs),
    /// Cancel a job.
    Cancel(IdArgs),
    /// List jobs, newest first.
    Jobs(JobsArgs),
    /// List the job kinds the server runs, with their arguments (remote kinds with the
    /// workers that run them now).
    Kinds,
    /// List the workers of the namespace: id, host, kinds, free slots, jobs in flight,
    /// last heartbeat; or, with --drain, ask one to drain and leave.
    Workers(WorkersArgs),
    /// Show the server's counters: jobs queued, delayed and running now, jobs finished
    /// since it started, open watch streams.
    Stats,
    /// Periodic jobs: create, list, get, pause, resume, trigger, backfill, delete, and
    /// `preview` (a spec's next fire times, computed locally).
    Schedule(schedule::ScheduleArgs),
    /// Manage the auth file (`serve --auth`): add a principal with a new token, list,
    /// remove. Local: no server involved.
    Auth(auth::AuthArgs),
    /// Measure throughput and latency (workloads W1-W8) and print a table.
    Bench(bench::BenchArgs),
    /// W6's client process: times sequential calls and prints percentiles as JSON.
    #[command(hide = true)]
    BenchProbe(crate::bench::probe::ProbeArgs),
    /// W6's limit: a bare tonic echo server; prints its URL, stops when stdin closes.
    #[command(hide = true)]
    BenchEcho(crate::bench::probe::EchoArgs),
    /// W8's minimal Rust worker: completes every job of its kind at once.
    #[command(hide = true)]
    BenchWorker(crate::bench::worker::WorkerArgs),
}

/// A job as the command line describes it: `spindle submit`'s and `spindle schedule
/// create`'s shared flags.
#[derive(Debug, Clone, Args)]
pub struct JobArgs {
    /// The job kind (see `spindle kinds`).
    pub kind: String,
    /// One argument as KEY=VALUE; VALUE is read as JSON if it parses, else as a string.
    #[arg(long, value_name = "KEY=VALUE")]
    pub arg: Vec<String>,
    /// All arguments as one JSON object (--arg values are added on top).
    #[arg(long, value_name = "JSON")]
    pub args: Option<String>,
    /// The queue (default "default").
    #[arg(long)]
    pub queue: Option<String>,
    /// Higher runs first.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub priority: i32,
    /// Fail an attempt that runs longer than this.
    #[arg(long, value_parser = parse_duration, allow_hyphen_values = true)]
    pub timeout: Option<Duration>,
    /// Attempts in all (1 = no retry); default: the kind's policy.
    #[arg(long)]
    pub max_attempts: Option<u32>,
}

/// Flags of `spindle submit`.
#[derive(Debug, Clone, Args)]
pub struct SubmitArgs {
    #[command(flatten)]
    pub job: JobArgs,
    /// Run no earlier than this from now, e.g. 30s, 5m.
    #[arg(long, value_parser = parse_duration, allow_hyphen_values = true)]
    pub delay: Option<Duration>,
    /// Return the existing job if one was submitted with this key.
    #[arg(long)]
    pub idempotency_key: Option<String>,
    /// Follow the job like `spindle watch` (and exit like it).
    #[arg(long)]
    pub watch: bool,
}

/// Flags of `spindle workers`.
#[derive(Debug, Clone, Args)]
pub struct WorkersArgs {
    /// Ask this worker to drain: no more jobs; it finishes within --grace, gives the rest
    /// back (requeued, attempts not spent) and leaves.
    #[arg(long, value_name = "WORKER_ID")]
    pub drain: Option<String>,
    /// With --drain: how long it has to finish what it runs, e.g. 30s.
    #[arg(long, value_parser = parse_duration, default_value = "30s", requires = "drain")]
    pub grace: Duration,
}

/// A job id.
#[derive(Debug, Clone, Args)]
pub struct IdArgs {
    /// The job id.
    pub id: String,
}

/// Flags of `spindle status`.
#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    /// The job id.
    pub id: String,
    /// Wait up to this long for the job to finish, e.g. 30s.
    #[arg(long, value_parser = parse_duration, allow_hyphen_values = true)]
    pub wait: Option<Duration>,
}

/// Flags of `spindle jobs`.
#[derive(Debug, Clone, Args)]
pub struct JobsArgs {
    /// Only jobs in this state.
    #[arg(long, value_parser = ["scheduled", "queued", "running", "retry_wait", "succeeded", "failed", "cancelled"])]
    pub state: Option<String>,
    /// Only jobs of this kind.
    #[arg(long)]
    pub kind: Option<String>,
    /// Only jobs in this queue.
    #[arg(long)]
    pub queue: Option<String>,
    /// Only jobs this schedule fired.
    #[arg(long)]
    pub schedule: Option<String>,
    /// How many, newest first.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub limit: u32,
}

#[doc(hidden)]
pub fn write_line(line: std::fmt::Arguments<'_>) {
    use std::io::Write;
    if let Err(e) = writeln!(std::io::stdout().lock(), "{line}")
        && e.kind() == std::io::ErrorKind::BrokenPipe
    {
        std::process::exit(0);
    }
}

/// Runs a client subcommand; returns the process exit code.
pub async fn run_client(cli: Cli) -> u8 {
    let json = cli.json;
    match client_command(cli).await {
        Ok(code) => code,
        Err(e) => {
            if json {
                out!("{}", e.to_json());
            } else {
                eprintln!("spindle: {e}");
            }
            e.exit_code()
        }
    }
}

async fn client_command(cli: Cli) -> Result<u8, client::CliError> {
    let Some(command) = cli.command else {
        return Ok(client::exit::OK);
    };
    let json = cli.json;
    let tls = client::ClientTls {
        ca: cli.ca.clone(),
        cert: cli.cert.clone(),
        key: cli.key.clone(),
    };
    let mut c = client::connect(&cli.server, &cli.namespace, &tls, cli.token.as_deref()).await?;
    match command {
        Command::Serve(_)
        | Command::Auth(_)
        | Command::Bench(_)
        | Command::BenchProbe(_)
        | Command::BenchEcho(_)
        | Command::BenchWorker(_) => {}
        Command::Schedule(args) => return schedule::run(&mut c, &args.command, json).await,
        Command::Submit(args) => {
            let job = client::submit(&mut c, &args).await?;
            if json {
                out!("{}", render::job_json(&job));
            } else if !args.watch {
                out!("{}", job.id);
            }
            if args.watch {
                return watch::watch(&mut c, &job.id, json).await;
            }
        }
        Command::Watch(args) => return watch::watch(&mut c, &args.id, json).await,
        Command::Status(args) => client::print_job(&client::status(&mut c, &args).await?, json),
        Command::Cancel(args) => client::print_job(&client::cancel(&mut c, &args.id).await?, json),
        Command::Jobs(args) => {
            let jobs = client::jobs(&mut c, &args).await?;
            if json {
                jobs.iter().for_each(|j| out!("{}", render::job_json(j)));
            } else {
                out!("{}", render::jobs_table(&jobs));
            }
        }
        Command::Stats => {
            let stats = client::stats(&mut c).await?;
            if json {
                out!("{}", render::stats_json(&stats));
            } else {
                out!("{}", render::stats_text(&stats));
            }
        }
        Command::Kinds => {
            for kind in client::kinds(&mut c).await? {
                if json {
                    out!("{}", render::kind_json(&kind));
                } else {
                    out!("{}\n", render::kind_text(&kind));
                }
            }
        }
        Command::Workers(WorkersArgs {
            drain: Some(id),
            grace,
        }) => {
            let worker = client::drain_worker(&mut c, &id, grace).await?;
            if json {
                out!("{}", render::worker_json(&worker));
            } else {
                out!("worker {} is draining (grace {grace:?})", worker.id);
            }
        }
        Command::Workers(_) => {
            let workers = client::workers(&mut c).await?;
            if json {
                for w in &workers {
                    out!("{}", render::worker_json(w));
                }
            } else if workers.is_empty() {
                out!(
                    "no workers in namespace {}",
                    if c.namespace.is_empty() {
                        "default"
                    } else {
                        &c.namespace
                    }
                );
            } else {
                out!("{}", render::workers_table(&workers));
            }
        }
    }
    Ok(client::exit::OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("soon").is_err());
        assert_eq!(
            parse_duration("5 days"),
            Ok(Duration::from_secs(5 * 86_400))
        );
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert!(parse_duration("-5s").unwrap_err().contains("negative"));
        assert!(parse_duration("soonish").unwrap_err().contains("1h30m"));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_queue_limit("mail=4"), Ok(("mail".to_string(), 4)));
        assert!(parse_queue_limit("mail").is_err());
        assert!(parse_queue_limit("mail=0").is_err());
    }

    #[test]
    fn global_flags_go_before_or_after_the_subcommand() {
        let before = Cli::parse_from(["spindle", "--server", "http://h:1", "--json", "kinds"]);
        let after = Cli::parse_from(["spindle", "kinds", "--server", "http://h:1", "--json"]);
        for cli in [before, after] {
            assert_eq!((cli.server.as_str(), cli.json), ("http://h:1", true));
        }
    }

    #[test]
    fn no_subcommand_means_serve_defaults() {
        let cli = Cli::parse_from(["spindle"]);
        assert!(cli.command.is_none());
        let args = ServeArgs::default();
        assert_eq!(args.addr.to_string(), "127.0.0.1:50051");
        assert_eq!(args.config().shutdown_grace, Duration::from_secs(30));
    }

    #[test]
    fn the_command_line_definition_is_consistent() {
        // Catches clashing flag names (a subcommand's --json against the global one) that
        // would otherwise only panic when that subcommand is parsed.
        use clap::CommandFactory;
        Cli::command().debug_assert();
        let bench = Cli::parse_from(["spindle", "bench", "--smoke", "--json", "--only", "W1,W3"]);
        assert!(bench.json && matches!(bench.command, Some(Command::Bench(_))));
    }
}
