use super::*;

fn principal(name: &str, role: Role, namespaces: Namespaces, token: &str) -> Arc<Principal> {
    Arc::new(Principal {
        name: name.into(),
        role,
        namespaces,
        token: TokenHash::of(token),
        limits: PrincipalLimits::default(),
    })
}

#[test]
fn each_role_reaches_exactly_its_methods() {
    let cases = [
        ("/spindle.v1.JobService/GetStatus", Need::Read),
        ("/spindle.v1.JobService/Submit", Need::Submit),
        ("/spindle.v1.JobService/DrainWorker", Need::Admin),
        ("/spindle.v1.ScheduleService/GetSchedule", Need::Admin),
        ("/spindle.worker.v1.WorkerService/Session", Need::Work),
        ("/grpc.health.v1.Health/Check", Need::Nothing),
        ("/spindle.v1.JobService/NoSuchMethod", Need::Admin),
        ("garbage", Need::Admin),
    ];
    for (path, need) in cases {
        assert_eq!(need_of(path), need, "{path}");
    }
    assert!(Role::Submitter.allows(Need::Read) && !Role::Reader.allows(Need::Submit));
    assert!(!Role::Worker.allows(Need::Read) && !Role::Submitter.allows(Need::Work));
    assert!(Role::Admin.allows(Need::Work) && !Role::Submitter.allows(Need::Admin));
}

#[test]
fn an_empty_namespace_is_the_principals_only_one_else_default() {
    let one = principal(
        "a",
        Role::Reader,
        Namespaces::Only(vec!["team-a".into()]),
        "t",
    );
    assert_eq!(one.namespace("").unwrap(), "team-a");
    assert_eq!(one.namespace("team-a").unwrap(), "team-a");
    let denied = one.namespace("team-b").unwrap_err();
    assert_eq!(
        denied.to_string(),
        "principal \"a\" may not use namespace \"team-b\""
    );
    let two = principal(
        "b",
        Role::Reader,
        Namespaces::Only(vec!["x".into(), "default".into()]),
        "t",
    );
    assert_eq!(two.namespace("").unwrap(), "default");
    let all = principal("c", Role::Admin, Namespaces::All, "t");
    assert_eq!(all.namespace("").unwrap(), "default");
    assert_eq!(all.namespace("anything").unwrap(), "anything");
}

#[test]
fn the_gate_names_each_refusal_and_limits_the_rate() {
    let mut limited = (*principal("ci", Role::Submitter, Namespaces::All, "spk_ci")).clone();
    limited.limits.rate = Some(Rate {
        per_second: 1.0,
        burst: 2.0,
    });
    let principals = vec![
        Arc::new(limited),
        principal("r", Role::Reader, Namespaces::All, "spk_r"),
    ];
    let gate = Gate::new(Policy::new(principals, BTreeMap::new()));
    let now = Instant::now();
    let submit = "/spindle.v1.JobService/Submit";
    assert_eq!(
        gate.admit("/grpc.health.v1.Health/Check", None, now),
        Ok(None)
    );
    assert!(
        matches!(gate.admit(submit, None, now), Err(Refusal::Unauthenticated(m)) if m.starts_with("no token"))
    );
    assert!(
        matches!(gate.admit(submit, Some(b"Basic x"), now), Err(Refusal::Unauthenticated(m)) if m.starts_with("malformed"))
    );
    assert_eq!(
        gate.admit(submit, Some(b"Bearer nope"), now),
        Err(Refusal::Unauthenticated("unknown token"))
    );
    let denied = gate.admit(submit, Some(b"Bearer spk_r"), now).unwrap_err();
    assert_eq!(
        denied,
        Refusal::Denied {
            principal: "r".into(),
            role: Role::Reader
        }
    );
    for _ in 0..2 {
        let who = gate
            .admit(submit, Some(b"bearer  spk_ci "), now)
            .unwrap()
            .unwrap();
        assert_eq!(who.name, "ci");
    }
    let limited = gate.admit(submit, Some(b"Bearer spk_ci"), now).unwrap_err();
    assert_eq!(
        limited,
        Refusal::Limited {
            principal: "ci".into(),
            retry_after: Duration::from_secs(1)
        }
    );
    // A reload that keeps the principal keeps its bucket: still empty.
    gate.replace((*gate.policy()).clone());
    assert!(gate.admit(submit, Some(b"Bearer spk_ci"), now).is_err());
    assert!(
        gate.admit(submit, Some(b"Bearer spk_ci"), now + Duration::from_secs(1))
            .is_ok()
    );
}
