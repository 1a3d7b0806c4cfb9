//! Property-based fuzzing of every decoder that takes outside input: the cron and interval
//! parsers and time zones, protobuf Struct to JSON, each built-in kind's args check, the
//! stored record decoders, the auth file parser and the authorization header. Each target must never panic, and what it accepts must behave (slots in
//! order, Structs round-trip). CI runs each briefly (`PROPTEST_CASES`, default 1,000);
//! a long run is `PROPTEST_CASES=100000 cargo test --test fuzz`. A failing input proptest
//! finds goes to its regressions file (under proptest-regressions/), which is kept in the
//! repository and replayed first; none so far.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use proptest::prelude::*;
use prost_types::value::Kind;
use spindle::access::file::principal_line;
use spindle::jobs::registry::JobKind;
use spindle::model::job::Job;
use spindle::model::schedule::{Repeat, Schedule, Spec, SpecInput};
use spindle::model::worker::RemoteKind;
use spindle::pb::json::{json_to_value, value_to_json};

fn cases() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(1000);
    ProptestConfig {
        cases,
        ..ProptestConfig::default()
    }
}

/// Cron-like text: the characters cron syntax uses, and anything else now and then.
fn cron_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[0-9*/,\\-? LW#]{0,30}",
        "@[a-z]{0,10}",
        "[0-9*/,\\-]{1,6}( [0-9*/,\\-A-Za-z]{1,6}){4,6}",
        any::<String>(),
    ]
}

fn zone() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("Europe/Berlin".to_string()),
        Just("America/New_York".to_string()),
        Just("Australia/Lord_Howe".to_string()),
        "[A-Za-z_/+\\-0-9]{0,30}",
    ]
}

/// A protobuf Value tree, up to 4 levels deep.
fn pb_value() -> impl Strategy<Value = prost_types::Value> {
    let leaf = prop_oneof![
        Just(Kind::NullValue(0)),
        any::<bool>().prop_map(Kind::BoolValue),
        any::<f64>().prop_map(Kind::NumberValue),
        ".{0,12}".prop_map(Kind::StringValue),
    ]
    .prop_map(|kind| prost_types::Value { kind: Some(kind) });
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8)
                .prop_map(|values| Kind::ListValue(prost_types::ListValue { values })),
            prop::collection::btree_map(".{0,8}", inner, 0..8)
                .prop_map(|fields| Kind::StructValue(prost_types::Struct { fields })),
        ]
        .prop_map(|kind| prost_types::Value { kind: Some(kind) })
    })
}

fn json_args() -> impl Strategy<Value = serde_json::Value> {
    pb_value().prop_filter_map("a JSON value", |v| value_to_json(v, "args").ok())
}

/// The built-in kinds and a runtime to run their (async) checks on, made once for every
/// case.
fn checkers() -> &'static (Vec<Arc<JobKind>>, tokio::runtime::Runtime) {
    static CHECKERS: OnceLock<(Vec<Arc<JobKind>>, tokio::runtime::Runtime)> = OnceLock::new();
    CHECKERS.get_or_init(|| {
        let dir = std::env::temp_dir().join("spindle-fuzz-files");
        std::fs::create_dir_all(&dir).unwrap();
        let files = spindle::jobs::files::FilesDir::open(&dir).unwrap();
        let registry = spindle::jobs::builtins(files, Default::default());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        (registry.kinds().cloned().collect(), runtime)
    })
}

proptest! {
    #![proptest_config(cases())]

    #[test]
    fn cron_specs_never_panic_and_give_slots_in_order(cron in cron_text(), zone in zone()) {
        let input = SpecInput {
            repeat: Repeat::Cron(cron),
            timezone: zone,
            start: None,
            end: None,
            jitter: Duration::ZERO,
        };
        if let Ok(spec) = Spec::new(input) {
            let now = SystemTime::now();
            let slots = spec.next_n(now, 3);
            prop_assert!(slots.windows(2).all(|w| w[0] < w[1]));
            prop_assert!(slots.iter().all(|s| *s > now));
            let _ = spec.due(now - Duration::from_secs(86_400), now, Duration::from_secs(3600));
        }
    }

    #[test]
    fn interval_and_at_texts_never_panic(text in any::<String>(), every in "every [0-9a-z +]{0,16}") {
        for text in [text, every] {
            if let Ok(repeat) = text.parse::<Repeat>() {
                let input = SpecInput {
                    repeat,
                    timezone: String::new(),
                    start: None,
                    end: None,
                    jitter: Duration::ZERO,
                };
                if let Ok(spec) = Spec::new(input) {
                    let _ = spec.next_n(SystemTime::now(), 2);
                }
            }
        }
    }

    #[test]
    fn structs_to_json_never_panic_and_round_trip(value in pb_value()) {
        if let Ok(json) = value_to_json(value, "args") {
            let again = value_to_json(json_to_value(&json), "args");
            prop_assert_eq!(again.ok(), Some(json));
        }
    }

    #[test]
    fn builtin_args_checks_never_panic(args in json_args(), pick in 0usize..16) {
        let (kinds, runtime) = checkers();
        let kind = &kinds[pick % kinds.len()];
        let _ = runtime.block_on(kind.validate(&args));
    }

    #[test]
    fn stored_record_decoders_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256), text in "\\{[\"a-z_:0-9,\\[\\]{} .\\-]{0,120}\\}") {
        for input in [bytes.as_slice(), text.as_bytes()] {
            let _ = serde_json::from_slice::<Job>(input);
            let _ = serde_json::from_slice::<Schedule>(input);
            let _ = serde_json::from_slice::<RemoteKind>(input);
        }
    }

    #[test]
    fn auth_files_never_panic_and_what_parses_writes_back(lines in prop::collection::vec(auth_line(), 0..6)) {
        let text = lines.join("\n");
        if let Ok(policy) = spindle::access::file::parse(&text) {
            // Every principal it took is written back by `auth add`'s line and read the same.
            let written: Vec<String> = policy.principals().iter()
                .map(|p| principal_line(&p.name, p.role, &p.namespaces, &p.token))
                .collect();
            let again = spindle::access::file::parse(&written.join("\n")).expect("written lines parse");
            for (before, after) in policy.principals().iter().zip(again.principals()) {
                prop_assert_eq!((&before.name, before.role, &before.namespaces), (&after.name, after.role, &after.namespaces));
                prop_assert!(before.token.matches(&after.token));
            }
        }
    }

    #[test]
    fn authorization_headers_never_panic(header in prop::collection::vec(any::<u8>(), 0..80), path in "/[A-Za-z./]{0,40}") {
        let gate = gate();
        let _ = gate.admit(&path, Some(&header), tokio::time::Instant::now());
        let _ = gate.admit("/spindle.v1.JobService/Submit", Some(&header), tokio::time::Instant::now());
    }
}

/// An auth file line: mostly well-formed words with bad values mixed in, or anything.
fn auth_line() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        Just("role"),
        Just("namespaces"),
        Just("sha256"),
        Just("rate"),
        Just("burst"),
        Just("max-args"),
        Just("watchers"),
        Just("queued"),
        Just("args-bytes"),
        Just("submits"),
        Just("submits-burst"),
        Just("schedules"),
        Just("x"),
    ];
    let value = prop_oneof![
        Just("admin".to_string()),
        Just("reader".to_string()),
        Just("*".to_string()),
        "[a-z,*.-]{0,12}",
        "[0-9]{1,4}(/s|/min|KiB|M)?",
        "[0-9a-f]{64}",
        any::<String>(),
    ];
    let pair = (key, value).prop_map(|(k, v)| format!("{k}={v}"));
    prop_oneof![
        (
            "(principal|quota)",
            "[a-zA-Z0-9._-]{0,10}",
            prop::collection::vec(pair, 0..6)
        )
            .prop_map(|(head, name, pairs)| format!("{head} {name} {}", pairs.join(" "))),
        Just(format!(
            "principal ok role=admin namespaces=* sha256={}",
            "ab".repeat(32)
        )),
        "#.{0,20}",
        any::<String>(),
    ]
}

/// A gate with one principal of each role, built once.
fn gate() -> &'static spindle::access::Gate {
    static GATE: OnceLock<spindle::access::Gate> = OnceLock::new();
    GATE.get_or_init(|| {
        let text: String = ["reader", "submitter", "worker", "admin"]
            .iter()
            .map(|role| {
                let hash = spindle::access::token::TokenHash::of(&format!("tok-{role}"));
                format!(
                    "principal {role} role={role} namespaces=* sha256={} rate=1000/s\n",
                    hash.to_hex()
                )
            })
            .collect();
        spindle::access::Gate::new(spindle::access::file::parse(&text).expect("gate file"))
    })
}
