//! `spindle auth`: the auth file's principals, managed locally (no server involved). `add`
//! makes a token, prints it once and appends only its hash; `list` shows who may call;
//! `remove` takes a principal out. A running server takes the change on SIGHUP.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use serde_json::json;

use super::client::exit;
use crate::access::file::{self, check_name, principal_line};
use crate::access::{Namespaces, Policy, Role, token};

/// Flags of `spindle auth`.
#[derive(Debug, Clone, Args)]
pub struct AuthArgs {
    /// The auth file (`spindle serve --auth FILE`).
    #[arg(
        long,
        global = true,
        env = "SPINDLE_AUTH",
        default_value = "spindle.auth"
    )]
    pub file: PathBuf,
    #[command(subcommand)]
    pub command: AuthCommand,
}

/// What to do with the auth file.
#[derive(Debug, Clone, Subcommand)]
pub enum AuthCommand {
    /// Create a principal with a new token: prints the token once and writes only its
    /// SHA-256 to the file. Give the namespaces with --namespace (comma-separated, or *
    /// for all).
    Add {
        /// The principal's name, as refusals in the log will name it.
        name: String,
        /// reader, submitter, worker or admin.
        #[arg(long)]
        role: String,
    },
    /// List the principals and quotas in the file (never a token: the file has none).
    List,
    /// Remove a principal: its token stops working when the server reloads.
    Remove { name: String },
}

/// Runs `spindle auth`; `namespaces` is the global --namespace flag's value.
pub fn run(args: &AuthArgs, namespaces: &str, json: bool) -> u8 {
    let done = match &args.command {
        AuthCommand::Add { name, role } => add(&args.file, name, role, namespaces, json),
        AuthCommand::List => list(&args.file, json),
        AuthCommand::Remove { name } => remove(&args.file, name),
    };
    match done {
        Ok(()) => exit::OK,
        Err(why) => {
            eprintln!("spindle auth: {why}");
            exit::USAGE
        }
    }
}

/// The file's text and policy; a missing file is an empty one.
fn read(path: &Path) -> Result<(String, Policy), String> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let policy = file::parse(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok((text, policy))
}

fn add(path: &Path, name: &str, role: &str, namespaces: &str, json: bool) -> Result<(), String> {
    check_name("the principal's name", name)?;
    let role = Role::parse(role)?;
    let namespaces = match namespaces.trim() {
        "" => {
            return Err(
                "give the namespaces it may use: --namespace NS[,NS...] or '*' for all".into(),
            );
        }
        list => file::parse_namespaces(list)?,
    };
    let (text, policy) = read(path)?;
    if policy.principals().iter().any(|p| p.name == name) {
        return Err(format!(
            "{}: principal {name:?} already exists",
            path.display()
        ));
    }
    let token = token::generate().map_err(|e| format!("no random source: {e}"))?;
    let line = principal_line(name, role, &namespaces, &token::TokenHash::of(&token));
    let separator = if text.is_empty() || text.ends_with('\n') {
        ""
    } else {
        "\n"
    };
    let mut out = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    (out.write_all(format!("{separator}{line}\n").as_bytes()))
        .and_then(|()| out.sync_all())
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if json {
        println!(
            "{}",
            json!({"name": name, "role": role.name(), "token": token})
        );
    } else {
        eprintln!(
            "added principal {name} ({}) to {}; its token, shown only now:",
            role.name(),
            path.display()
        );
        println!("{token}");
        eprintln!("a running server takes it on SIGHUP (kill -HUP <pid>)");
    }
    Ok(())
}

fn list(path: &Path, json: bool) -> Result<(), String> {
    let (_, policy) = read(path)?;
    for p in policy.principals() {
        let namespaces = match &p.namespaces {
            Namespaces::All => "*".to_string(),
            Namespaces::Only(names) => names.join(","),
        };
        let rate = p
            .limits
            .rate
            .map(|r| format!("{}/s burst {}", r.per_second, r.burst));
        if json {
            println!(
                "{}",
                json!({"name": p.name, "role": p.role.name(), "namespaces": namespaces, "rate": rate})
            );
        } else {
            let rate = rate.map(|r| format!("  rate {r}")).unwrap_or_default();
            println!("{}  {}  {namespaces}{rate}", p.name, p.role.name());
        }
    }
    for (namespace, quota) in &policy.quotas {
        if json {
            let submits = quota.submits.map(|r| r.per_second);
            println!(
                "{}",
                json!({"quota": namespace, "queued": quota.queued, "args_bytes": quota.args_bytes, "submits_per_second": submits, "schedules": quota.schedules})
            );
        } else {
            println!("quota {namespace}: {quota:?}");
        }
    }
    Ok(())
}

fn remove(path: &Path, name: &str) -> Result<(), String> {
    let (text, policy) = read(path)?;
    if !policy.principals().iter().any(|p| p.name == name) {
        return Err(format!("{}: no principal {name:?}", path.display()));
    }
    let kept: String = text
        .lines()
        .filter(|line| {
            let mut words = line.split('#').next().unwrap_or("").split_whitespace();
            !(words.next() == Some("principal") && words.next() == Some(name))
        })
        .map(|line| format!("{line}\n"))
        .collect();
    // A new file renamed over the old one: a reload never reads half of it.
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut temp = tempfile::NamedTempFile::new_in(dir).map_err(|e| e.to_string())?;
    (temp.write_all(kept.as_bytes()))
        .and_then(|()| temp.as_file().sync_all())
        .map_err(|e| e.to_string())?;
    temp.persist(path).map_err(|e| e.to_string())?;
    eprintln!(
        "removed principal {name} from {}; a running server drops it on SIGHUP",
        path.display()
    );
    Ok(())
}
