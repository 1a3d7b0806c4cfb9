//! The auth file parser (`spindle serve --auth FILE`) and the authorization header: any
//! text must parse or be refused with a line number, never panic, and what parses must
//! write back the same through the line `spindle auth add` appends; any header must be
//! admitted or refused.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use spindle::access::Gate;
use spindle::access::file::{parse, principal_line};
use spindle::access::token::TokenHash;

/// A gate with one principal of each role (tokens `tok-ROLE`), made once.
fn gate() -> &'static Gate {
    static GATE: OnceLock<Gate> = OnceLock::new();
    GATE.get_or_init(|| {
        let text: String = ["reader", "submitter", "worker", "admin"]
            .iter()
            .map(|role| {
                let hash = TokenHash::of(&format!("tok-{role}")).to_hex();
                format!("principal {role} role={role} namespaces=* sha256={hash}\n")
            })
            .collect();
        Gate::new(parse(&text).expect("the gate's file parses"))
    })
}

fuzz_target!(|data: &[u8]| {
    let now = tokio::time::Instant::now();
    let _ = gate().admit("/spindle.v1.JobService/Submit", Some(data), now);
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(policy) = parse(text) {
        let written: Vec<String> = (policy.principals().iter())
            .map(|p| principal_line(&p.name, p.role, &p.namespaces, &p.token))
            .collect();
        let again = parse(&written.join("\n")).expect("written lines parse");
        for (before, after) in policy.principals().iter().zip(again.principals()) {
            assert_eq!((&before.name, before.role), (&after.name, after.role));
            assert_eq!(before.namespaces, after.namespaces);
            assert!(before.token.matches(&after.token));
        }
    }
});
