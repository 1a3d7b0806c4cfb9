//! The `spindle schedule` subcommands that talk to the server: each builds its request,
//! calls ScheduleService, and prints the answer as text or JSON.

use std::time::{Duration, SystemTime};

use super::{CreateArgs, ScheduleCommand, render};
use crate::cli::client::{CliError, Remote, exit, job_request};
use crate::pb;
use crate::pb::schedule_service_client::ScheduleServiceClient;

fn duration(d: Option<Duration>) -> Option<prost_types::Duration> {
    d.and_then(|d| d.try_into().ok())
}

/// The spec a create names.
fn spec(a: &CreateArgs) -> Result<pb::ScheduleSpec, CliError> {
    use pb::schedule_spec::Repeat;
    let repeat = match (&a.cron, &a.every, a.at) {
        (Some(cron), _, _) => Repeat::Cron(cron.clone()),
        (None, Some(every), _) => {
            let (every, offset) = every.split_once('+').unwrap_or((every, "0s"));
            let parse = |text: &str, flag: &str| {
                humantime::parse_duration(text.trim())
                    .map_err(|e| CliError::Usage(format!("--every: {flag} {text:?}: {e}")))
            };
            Repeat::Interval(pb::Interval {
                every: duration(Some(parse(every, "interval")?)),
                offset: duration(Some(parse(offset, "offset")?)),
            })
        }
        (None, None, Some(at)) => Repeat::At(at.into()),
        (None, None, None) => return Err(CliError::Usage("give --cron, --every or --at".into())),
    };
    Ok(pb::ScheduleSpec {
        repeat: Some(repeat),
        timezone: a.tz.clone(),
        jitter: duration(a.jitter),
        ..Default::default()
    })
}

fn overlap(name: &str) -> pb::OverlapPolicy {
    match name {
        "buffer-one" => pb::OverlapPolicy::BufferOne,
        "allow-all" => pb::OverlapPolicy::AllowAll,
        "cancel-other" => pb::OverlapPolicy::CancelOther,
        _ => pb::OverlapPolicy::Skip,
    }
}

fn create_request(r: &Remote, a: &CreateArgs) -> Result<pb::CreateScheduleRequest, CliError> {
    let template = job_request(&a.job)?;
    Ok(pb::CreateScheduleRequest {
        namespace: r.namespace.clone(),
        id: a.id.clone(),
        spec: Some(spec(a)?),
        template: Some(template),
        policies: Some(pb::SchedulePolicies {
            overlap: overlap(&a.overlap).into(),
            catchup_window: duration(a.catchup_window),
        }),
        paused: a.paused,
        // A retry of this command (after a timeout) gets the schedule it made.
        request_id: format!("cli-{}", crate::model::job::JobId::new()),
        ..Default::default()
    })
}

/// Runs a schedule subcommand against the server; returns the exit code.
pub async fn run(r: &mut Remote, command: &ScheduleCommand, json: bool) -> Result<u8, CliError> {
    let mut client = ScheduleServiceClient::new(r.channel.clone());
    let ns = r.namespace.clone();
    let reference = |id: &str| pb::ScheduleRef {
        namespace: ns.clone(),
        id: id.to_string(),
    };
    let refused = |status| CliError::rpc(status, &r.server, None);
    let schedule = match command {
        ScheduleCommand::Preview(_) => return Ok(exit::OK),
        ScheduleCommand::Create(a) => client.create_schedule(create_request(r, a)?).await,
        ScheduleCommand::Get(a) => {
            let request = pb::GetScheduleRequest {
                namespace: ns.clone(),
                id: a.id.clone(),
            };
            client.get_schedule(request).await
        }
        ScheduleCommand::Pause(a) => {
            let request = pb::PauseScheduleRequest {
                namespace: ns.clone(),
                id: a.id.clone(),
                note: a.note.clone(),
            };
            client.pause_schedule(request).await
        }
        ScheduleCommand::Resume(a) => client.resume_schedule(reference(&a.id)).await,
        ScheduleCommand::Trigger(a) => {
            let job = client
                .trigger_schedule(reference(&a.id))
                .await
                .map_err(refused)?;
            crate::cli::client::print_job(&job.into_inner(), json);
            return Ok(exit::OK);
        }
        ScheduleCommand::Delete(a) => {
            client
                .delete_schedule(reference(&a.id))
                .await
                .map_err(refused)?;
            if json {
                out!("{}", serde_json::json!({"deleted": a.id}));
            } else {
                out!("deleted schedule {} (its jobs stay)", a.id);
            }
            return Ok(exit::OK);
        }
        ScheduleCommand::Backfill(a) => {
            let request = pb::BackfillScheduleRequest {
                namespace: ns.clone(),
                id: a.id.clone(),
                start: Some(a.from.into()),
                end: Some(a.to.unwrap_or_else(SystemTime::now).into()),
            };
            let runs = client.backfill_schedule(request).await.map_err(refused)?;
            render::print_runs(&runs.into_inner().runs, json);
            return Ok(exit::OK);
        }
        ScheduleCommand::List => {
            list(&mut client, &ns, json).await.map_err(refused)?;
            return Ok(exit::OK);
        }
    };
    render::print_schedule(&schedule.map_err(refused)?.into_inner(), json);
    Ok(exit::OK)
}

/// Every schedule of the namespace, page by page.
async fn list(
    client: &mut ScheduleServiceClient<crate::cli::client::AuthedChannel>,
    namespace: &str,
    json: bool,
) -> Result<(), tonic::Status> {
    let mut token = String::new();
    let mut all = Vec::new();
    loop {
        let request = pb::ListSchedulesRequest {
            namespace: namespace.to_string(),
            page_size: 1000,
            page_token: token,
        };
        let page = client.list_schedules(request).await?.into_inner();
        all.extend(page.schedules);
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    render::print_list(&all, json, namespace);
    Ok(())
}
