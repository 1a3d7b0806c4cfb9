//! `spindle watch`: follows a job to its end. On a terminal it draws a progress bar with
//! the job's message, rate and ETA; otherwise it prints one line per event (or one JSON
//! object per event with `--json`). If the connection drops, it reconnects and resumes
//! after the last sequence number it saw, so nothing is shown twice or missed.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};
use tonic::Code;

use super::client::{CliError, Remote, exit};
use super::render;
use crate::pb;
use crate::pb::job_event::Payload;

/// How long watch keeps trying to reconnect before it gives up.
const RESUME_FOR: Duration = Duration::from_secs(60);
/// Bar length when the job reports only a fraction.
const FRACTION_SCALE: u64 = 1000;

/// Follows the job; returns the exit code for its terminal state.
pub async fn watch(r: &mut Remote, id: &str, json: bool) -> Result<u8, CliError> {
    let server = r.server.clone();
    let server = server.as_str();
    let mut display = Display::new(json);
    let mut after = 0u64;
    let mut last_contact = Instant::now();
    let mut delay = Duration::from_millis(200);
    // Say once per outage that the stream was lost, not once per attempt to resume.
    let mut outage_told = false;
    loop {
        let request = pb::WatchProgressRequest {
            id: id.to_string(),
            after_seq: after,
            namespace: r.namespace.clone(),
        };
        match r.client.watch_progress(request).await {
            Ok(response) => {
                let mut stream = response.into_inner();
                loop {
                    match stream.message().await {
                        Ok(Some(event)) => {
                            after = event.seq;
                            last_contact = Instant::now();
                            outage_told = false;
                            delay = Duration::from_millis(200);
                            if let Some(code) = display.show(&event) {
                                return Ok(code);
                            }
                        }
                        Ok(None) => break,
                        Err(status) if resumable(status.code()) => break,
                        Err(status) => return Err(CliError::rpc(status, server, Some(id))),
                    }
                }
            }
            Err(status) if resumable(status.code()) => {}
            Err(status) => return Err(CliError::rpc(status, server, Some(id))),
        }
        if last_contact.elapsed() > RESUME_FOR {
            display.abandon();
            return Err(CliError::Unreachable {
                server: server.to_string(),
                detail: format!(
                    "lost the stream of job {id} and could not resume within {RESUME_FOR:?}"
                ),
            });
        }
        if !outage_told {
            display.note(&format!("connection lost; resuming after seq {after}"));
            outage_told = true;
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(2));
    }
}

/// Errors after which trying again may work: the server went away or is restarting.
fn resumable(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable
            | Code::Unknown
            | Code::Cancelled
            | Code::Aborted
            | Code::DeadlineExceeded
    )
}

/// Where events go.
enum Display {
    Json,
    Lines,
    Bar(ProgressBar),
}

impl Display {
    fn new(json: bool) -> Self {
        if json {
            Display::Json
        } else if std::io::stdout().is_terminal() {
            let bar =
                ProgressBar::with_draw_target(Some(FRACTION_SCALE), ProgressDrawTarget::stdout());
            let style = ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] [{wide_bar}] {percent:>3}% {msg} ({rate}, eta {eta})",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            // indicatif's own {per_sec} prints four decimals; one is plenty for a person.
            .with_key("rate", |state: &ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write!(w, "{:.1}/s", state.per_sec());
            })
            .progress_chars("=> ");
            bar.set_style(style);
            bar.enable_steady_tick(Duration::from_millis(120));
            Display::Bar(bar)
        } else {
            Display::Lines
        }
    }

    /// Shows an event; for the terminal event, returns the exit code.
    fn show(&mut self, event: &pb::JobEvent) -> Option<u8> {
        match self {
            Display::Json => out!("{}", render::event_json(event)),
            Display::Lines => out!("{}", render::event_line(event)),
            Display::Bar(bar) => draw(bar, event),
        }
        match &event.payload {
            Some(Payload::Finished(finished)) => Some(finished_code(finished.state)),
            _ => None,
        }
    }

    fn note(&self, text: &str) {
        match self {
            Display::Bar(bar) => bar.println(text),
            _ => eprintln!("{text}"),
        }
    }

    fn abandon(&self) {
        if let Display::Bar(bar) = self {
            bar.abandon();
        }
    }
}

fn draw(bar: &ProgressBar, event: &pb::JobEvent) {
    match &event.payload {
        Some(Payload::Progress(p)) => {
            if p.total > 0 {
                bar.set_length(p.total);
                bar.set_position(p.done);
            } else {
                bar.set_length(FRACTION_SCALE);
                bar.set_position((p.fraction * FRACTION_SCALE as f64) as u64);
            }
            bar.set_message(p.message.clone());
        }
        Some(Payload::StateChanged(_)) | Some(Payload::Log(_)) => {
            bar.println(render::event_line(event));
        }
        Some(Payload::Finished(_)) => {
            bar.finish_and_clear();
            out!("{}", render::event_line(event));
        }
        None => {}
    }
}

fn finished_code(state: i32) -> u8 {
    match pb::JobState::try_from(state) {
        Ok(pb::JobState::Succeeded) => exit::OK,
        Ok(pb::JobState::Cancelled) => exit::JOB_CANCELLED,
        _ => exit::JOB_FAILED,
    }
}
