//! The auth file (`--auth FILE`): one principal or quota per line, so `spindle auth add`
//! can append to it and a person can read and edit it.
//!
//! ```text
//! # name      role              namespaces        the token's SHA-256      optional limits
//! principal ci role=submitter namespaces=team-a sha256=3f9a...  rate=50/s burst=100
//! principal ops role=admin namespaces=* sha256=...
//! quota team-a queued=10000 args-bytes=64MiB submits=200/s schedules=100
//! ```
//!
//! Parsing is strict: an unknown key, a duplicate name or token, or a bad value is an
//! error naming the line, and a server keeps its old policy rather than load half a file.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::limit::Rate;
use super::quota::Quota;
use super::token::TokenHash;
use super::{Namespaces, Policy, Principal, PrincipalLimits, Role};
use crate::model::job::MAX_NAMESPACE_NAME;
use crate::model::violation;

/// The most bytes an auth file may hold.
pub const MAX_FILE_BYTES: usize = 4 << 20;

/// What is wrong with an auth file, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct FileError {
    pub line: usize,
    pub message: String,
}

/// Parses an auth file's text.
pub fn parse(text: &str) -> Result<Policy, FileError> {
    if text.len() > MAX_FILE_BYTES {
        return Err(FileError {
            line: 0,
            message: format!("the file holds more than {MAX_FILE_BYTES} bytes"),
        });
    }
    let mut principals: Vec<Arc<Principal>> = Vec::new();
    let mut quotas = BTreeMap::new();
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let fail = |message: String| FileError { line, message };
        let content = raw.split('#').next().unwrap_or("").trim();
        let mut words = content.split_whitespace();
        match words.next() {
            None => continue,
            Some("principal") => {
                let principal = principal(words).map_err(fail)?;
                if principals.iter().any(|p| p.name == principal.name) {
                    return Err(fail(format!(
                        "principal {:?} appears twice",
                        principal.name
                    )));
                }
                if principals.iter().any(|p| p.token.matches(&principal.token)) {
                    return Err(fail(format!(
                        "principal {:?} has the token of another principal",
                        principal.name
                    )));
                }
                principals.push(Arc::new(principal));
            }
            Some("quota") => {
                let (namespace, quota) = quota(words).map_err(fail)?;
                if quotas.insert(namespace.clone(), quota).is_some() {
                    return Err(fail(format!("quota {namespace:?} appears twice")));
                }
            }
            Some(other) => {
                return Err(fail(format!(
                    "{:?}: a line starts with `principal` or `quota`",
                    clip(other)
                )));
            }
        }
    }
    Ok(Policy::new(principals, quotas))
}

/// The line `spindle auth add` appends for a principal.
pub fn principal_line(
    name: &str,
    role: Role,
    namespaces: &Namespaces,
    token: &TokenHash,
) -> String {
    let namespaces = match namespaces {
        Namespaces::All => "*".to_string(),
        Namespaces::Only(names) => names.join(","),
    };
    format!(
        "principal {name} role={} namespaces={namespaces} sha256={}",
        role.name(),
        token.to_hex()
    )
}

/// Splits `key=value` words, refusing a word without `=` or a key given twice.
fn pairs<'a>(words: impl Iterator<Item = &'a str>) -> Result<Vec<(&'a str, &'a str)>, String> {
    let mut seen: Vec<(&str, &str)> = Vec::new();
    for word in words {
        let (key, value) = word
            .split_once('=')
            .ok_or_else(|| format!("{:?}: expected key=value", clip(word)))?;
        if seen.iter().any(|(k, _)| *k == key) {
            return Err(format!("{:?} is given twice", clip(key)));
        }
        seen.push((key, value));
    }
    Ok(seen)
}

fn principal<'a>(mut words: impl Iterator<Item = &'a str>) -> Result<Principal, String> {
    let name = words.next().ok_or("a principal needs a name")?;
    check_name("the principal's name", name)?;
    let (mut role, mut namespaces, mut token, mut burst) = (None, None, None, None);
    let mut limits = PrincipalLimits::default();
    for (key, value) in pairs(words)? {
        match key {
            "role" => role = Some(Role::parse(value)?),
            "namespaces" => namespaces = Some(parse_namespaces(value)?),
            "sha256" => {
                token = Some(TokenHash::from_hex(value).ok_or_else(|| {
                    "sha256 must be 64 hex digits (the SHA-256 of the token)".to_string()
                })?);
            }
            "rate" => limits.rate = Some(Rate::parse(value)?),
            "burst" => burst = Some(count(key, value)? as f64),
            "max-args" => limits.max_args_bytes = Some(size(key, value)? as usize),
            "watchers" => limits.watchers = Some(count(key, value)?),
            other => {
                return Err(unknown(
                    other,
                    "role, namespaces, sha256, rate, burst, max-args, watchers",
                ));
            }
        }
    }
    match (&mut limits.rate, burst) {
        (Some(rate), Some(burst)) => rate.burst = burst.max(1.0),
        (None, Some(_)) => return Err("burst needs a rate".into()),
        _ => {}
    }
    Ok(Principal {
        name: name.to_string(),
        role: role.ok_or("a principal needs role=")?,
        namespaces: namespaces.ok_or("a principal needs namespaces= (names, or * for all)")?,
        token: token.ok_or("a principal needs sha256= (its token's hash)")?,
        limits,
    })
}

fn quota<'a>(mut words: impl Iterator<Item = &'a str>) -> Result<(String, Quota), String> {
    let namespace = words.next().ok_or("a quota needs a namespace")?;
    check_name("the namespace", namespace)?;
    let mut quota = Quota::default();
    let mut burst = None;
    for (key, value) in pairs(words)? {
        match key {
            "queued" => quota.queued = Some(count(key, value)?),
            "args-bytes" => quota.args_bytes = Some(size(key, value)?),
            "submits" => quota.submits = Some(Rate::parse(value)?),
            "submits-burst" => burst = Some(count(key, value)? as f64),
            "schedules" => quota.schedules = Some(count(key, value)?),
            other => {
                return Err(unknown(
                    other,
                    "queued, args-bytes, submits, submits-burst, schedules",
                ));
            }
        }
    }
    match (&mut quota.submits, burst) {
        (Some(rate), Some(burst)) => rate.burst = burst.max(1.0),
        (None, Some(_)) => return Err("submits-burst needs submits".into()),
        _ => {}
    }
    Ok((namespace.to_string(), quota))
}

fn unknown(key: &str, known: &str) -> String {
    format!("unknown key {:?}; known: {known}", clip(key))
}

/// `*`, or names separated by commas (repeats dropped).
pub fn parse_namespaces(value: &str) -> Result<Namespaces, String> {
    if value == "*" {
        return Ok(Namespaces::All);
    }
    let mut names: Vec<String> = Vec::new();
    for name in value.split(',').map(str::trim) {
        check_name("a namespace", name)?;
        if !names.iter().any(|n| n == name) {
            names.push(name.to_string());
        }
    }
    Ok(Namespaces::Only(names))
}

/// A principal's or namespace's name, by the API's rule for names
/// ([`crate::model::violation::check_name`]).
pub fn check_name(what: &str, name: &str) -> Result<(), String> {
    violation::check_name(what, name, MAX_NAMESPACE_NAME)
        .map_err(|v| format!("{what} {:?} {}", clip(name), v.description))
}

fn count(key: &str, value: &str) -> Result<u64, String> {
    value
        .parse::<u64>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("{key}={:?}: expected a whole number above 0", clip(value)))
}

/// A size in bytes: a whole number with an optional KiB, MiB or GiB (or K, M, G) suffix.
fn size(key: &str, value: &str) -> Result<u64, String> {
    let split = value
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(value.len());
    let (digits, unit) = value.split_at(split);
    let scale: u64 = match unit {
        "" | "B" => 1,
        "K" | "KiB" | "KB" => 1 << 10,
        "M" | "MiB" | "MB" => 1 << 20,
        "G" | "GiB" | "GB" => 1 << 30,
        _ => 0,
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .filter(|n| *n > 0)
        .ok_or_else(|| {
            format!(
                "{key}={:?}: expected a size like 65536, 64KiB or 10MiB",
                clip(value)
            )
        })
}

/// At most 64 characters of an input in a message: errors must not grow with the file.
fn clip(text: &str) -> &str {
    match text.char_indices().nth(64) {
        Some((end, _)) => &text[..end],
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "3f9a000000000000000000000000000000000000000000000000000000000001";

    #[test]
    fn a_file_with_principals_quotas_and_comments_parses() {
        let text = format!(
            "# who\nprincipal ci role=submitter namespaces=a,b sha256={HASH} rate=5/s burst=20 # the CI\n\n\
             principal ops role=admin namespaces=* sha256={}\nquota a queued=10 args-bytes=64KiB submits=2/s schedules=3\n",
            HASH.replace('1', "2")
        );
        let policy = parse(&text).unwrap();
        let ci = &policy.principals()[0];
        assert_eq!((ci.name.as_str(), ci.role), ("ci", Role::Submitter));
        assert_eq!(
            ci.namespaces,
            Namespaces::Only(vec!["a".into(), "b".into()])
        );
        assert_eq!(ci.limits.rate.unwrap().burst, 20.0);
        assert_eq!(policy.principals()[1].namespaces, Namespaces::All);
        let quota = &policy.quotas["a"];
        assert_eq!(
            (quota.queued, quota.args_bytes, quota.schedules),
            (Some(10), Some(65536), Some(3))
        );
        assert_eq!(quota.submits.unwrap().per_second, 2.0);
    }

    #[test]
    fn mistakes_are_named_with_their_line() {
        let cases = [
            ("principal", "line 1: a principal needs a name"),
            (
                "principal a role=root namespaces=x sha256=00",
                "line 1: role \"root\"",
            ),
            (
                "principal a role=admin sha256=",
                "line 1: sha256 must be 64 hex digits",
            ),
            (
                "\nprincipal a role=admin namespaces=x",
                "line 2: a principal needs sha256=",
            ),
            (
                "principal a role=admin role=admin",
                "line 1: \"role\" is given twice",
            ),
            (
                "principal a/b role=admin",
                "line 1: the principal's name \"a/b\"",
            ),
            (
                "quota x queued=0",
                "line 1: queued=\"0\": expected a whole number above 0",
            ),
            ("quota x args-bytes=5TB", "line 1: args-bytes=\"5TB\""),
            ("quota x color=red", "line 1: unknown key \"color\""),
            ("quota x\nquota x", "line 2: quota \"x\" appears twice"),
            ("user a", "line 1: \"user\": a line starts with"),
        ];
        for (text, expected) in cases {
            let error = parse(text).unwrap_err().to_string();
            assert!(error.starts_with(expected), "{text:?}: {error}");
        }
        let twice = format!(
            "principal a role=admin namespaces=* sha256={HASH}\nprincipal b role=reader namespaces=* sha256={HASH}"
        );
        assert!(
            parse(&twice)
                .unwrap_err()
                .to_string()
                .contains("the token of another")
        );
    }

    #[test]
    fn the_line_auth_add_writes_parses_back() {
        let hash = TokenHash::from_hex(HASH).unwrap();
        let only = Namespaces::Only(vec!["a".into(), "b".into()]);
        let line = principal_line("ci", Role::Worker, &only, &hash);
        let policy = parse(&line).unwrap();
        assert_eq!(policy.principals()[0].namespaces, only);
        assert!(policy.principals()[0].token.matches(&hash));
    }
}
