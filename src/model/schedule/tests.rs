use super::*;

fn t(text: &str) -> SystemTime {
    SystemTime::from(text.parse::<Timestamp>().expect("a timestamp"))
}

fn utc(slot: SystemTime) -> String {
    Timestamp::try_from(slot).expect("in range").to_string()
}

fn spec(repeat: &str, timezone: &str) -> Spec {
    Spec::new(SpecInput {
        repeat: repeat.parse().expect("a repeat"),
        timezone: timezone.into(),
        start: None,
        end: None,
        jitter: Duration::ZERO,
    })
    .expect("a valid spec")
}

fn next(spec: &Spec, after: &str, n: usize) -> Vec<String> {
    spec.next_n(t(after), n).into_iter().map(utc).collect()
}

#[test]
fn cron_with_five_or_six_fields_and_shorthands() {
    let quarter = spec("*/15 * * * *", "");
    assert_eq!(
        next(&quarter, "2026-12-04T10:07:00Z", 2),
        ["2026-12-04T10:15:00Z", "2026-12-04T10:30:00Z"]
    );
    let seconds = spec("*/10 * * * * *", "UTC");
    assert_eq!(
        next(&seconds, "2026-12-04T10:07:05Z", 2),
        ["2026-12-04T10:07:10Z", "2026-12-04T10:07:20Z"]
    );
    let hourly = spec("@hourly", "");
    assert_eq!(
        next(&hourly, "2026-12-04T10:07:00Z", 1),
        ["2026-12-04T11:00:00Z"]
    );
}

#[test]
fn berlin_spring_gap_fires_once_right_after_and_autumn_hour_once() {
    let half_past_two = spec("30 2 * * *", "Europe/Berlin");
    // 2026-03-29: 02:00 CET jumps to 03:00 CEST; 02:30 does not exist.
    assert_eq!(
        next(&half_past_two, "2026-03-28T00:00:00Z", 3),
        [
            "2026-03-28T01:30:00Z", // 02:30 CET
            "2026-03-29T01:00:00Z", // 03:00 CEST, right after the gap
            "2026-03-30T00:30:00Z", // 02:30 CEST
        ]
    );
    // 2026-10-25: 03:00 CEST falls back to 02:00 CET; 02:30 happens twice, fires once.
    assert_eq!(
        next(&half_past_two, "2026-10-24T12:00:00Z", 2),
        ["2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z"]
    );
}

#[test]
fn new_york_gap_and_repeated_hour() {
    let gap = spec("30 2 * * *", "America/New_York");
    // 2026-03-08: 02:00 EST jumps to 03:00 EDT.
    assert_eq!(
        next(&gap, "2026-03-08T05:00:00Z", 1),
        ["2026-03-08T07:00:00Z"]
    );
    let repeated = spec("30 1 * * *", "America/New_York");
    // 2026-11-01: 02:00 EDT falls back to 01:00 EST; 01:30 fires once, in EDT.
    assert_eq!(
        next(&repeated, "2026-11-01T04:00:00Z", 2),
        ["2026-11-01T05:30:00Z", "2026-11-02T06:30:00Z"]
    );
}

#[test]
fn intervals_count_from_the_epoch_plus_the_offset() {
    let every = spec("every 90s", "");
    assert_eq!(
        next(&every, "1970-01-01T00:01:40Z", 2),
        ["1970-01-01T00:03:00Z", "1970-01-01T00:04:30Z"]
    );
    let offset = spec("every 90s + 30s", "Europe/Berlin");
    assert_eq!(
        next(&offset, "1970-01-01T00:01:40Z", 1),
        ["1970-01-01T00:02:00Z"]
    );
    // A slot exactly at `after` is not after it.
    assert_eq!(
        next(&every, "1970-01-01T00:03:00Z", 1),
        ["1970-01-01T00:04:30Z"]
    );
}

#[test]
fn one_off_start_end_and_jitter() {
    let once = spec("at 2026-12-24T18:00:00Z", "");
    assert_eq!(
        next(&once, "2026-12-01T00:00:00Z", 3),
        ["2026-12-24T18:00:00Z"]
    );
    assert!(next(&once, "2026-12-24T18:00:00Z", 1).is_empty());

    let bounded = Spec::new(SpecInput {
        repeat: "every 1m".parse().unwrap(),
        timezone: String::new(),
        start: Some(t("2026-12-04T10:00:00Z")),
        end: Some(t("2026-12-04T10:02:00Z")),
        jitter: Duration::from_secs(10),
    })
    .unwrap();
    let slots = bounded.next_n(t("2026-12-04T09:00:00Z"), 10);
    let slots: Vec<String> = slots.into_iter().map(utc).collect();
    assert_eq!(
        slots,
        [
            "2026-12-04T10:00:00Z",
            "2026-12-04T10:01:00Z",
            "2026-12-04T10:02:00Z"
        ]
    );
    let slot = t("2026-12-04T10:01:00Z");
    let fire = bounded.fire_time("nightly", slot);
    assert_eq!(
        fire,
        bounded.fire_time("nightly", slot),
        "the same every time"
    );
    assert!(fire >= slot && fire < slot + Duration::from_secs(10));
    assert_ne!(
        bounded.fire_time("other", slot),
        fire,
        "another schedule, another spread"
    );
}

#[test]
fn every_bad_field_is_named() {
    let refused = |repeat: Repeat, timezone: &str, start, end| {
        let input = SpecInput {
            repeat,
            timezone: timezone.into(),
            start,
            end,
            jitter: Duration::ZERO,
        };
        let fields: Vec<String> = Spec::new(input)
            .unwrap_err()
            .into_iter()
            .map(|v| v.field)
            .collect();
        fields
    };
    let cron = |e: &str| Repeat::Cron(e.into());
    assert_eq!(refused(cron("61 * * * *"), "", None, None), ["spec.cron"]);
    assert_eq!(refused(cron("* * *"), "", None, None), ["spec.cron"]);
    assert_eq!(refused(cron("@fortnightly"), "", None, None), ["spec.cron"]);
    // Found by fuzzing: an empty list item matched nothing, and each search for the next
    // slot took 1.4 s of CPU.
    for empty in [
        ", * 5  * 5 *",
        ", 5   * 1 *",
        "0 1,,2 * * *",
        "0 5, * * *",
        "0 0 L * +",
    ] {
        assert_eq!(
            refused(cron(empty), "", None, None),
            ["spec.cron"],
            "{empty}"
        );
    }
    assert_eq!(
        refused(cron("* * * * *"), "Mars/Olympus", None, None),
        ["spec.timezone"]
    );
    let zero = Repeat::Every {
        every: Duration::ZERO,
        offset: Duration::ZERO,
    };
    assert_eq!(refused(zero, "", None, None), ["spec.every"]);
    let start = Some(t("2026-12-04T10:00:00Z"));
    let end = Some(t("2026-12-04T09:00:00Z"));
    assert_eq!(
        refused(cron("* * * * *"), "Nowhere/Land", start, end),
        ["spec.timezone", "spec.end"]
    );
}

#[test]
fn catch_up_fires_the_latest_missed_slot_once_and_counts_the_rest() {
    let every_second = spec("every 1s", "");
    let hour = Duration::from_secs(3600);
    // Down from 10:00:00 to 10:05:00.5: 300 slots passed; the latest fires, 299 are missed.
    let due = every_second.due(t("2026-12-04T10:00:00Z"), t("2026-12-04T10:05:00.5Z"), hour);
    assert_eq!(due.fire.map(utc).as_deref(), Some("2026-12-04T10:05:00Z"));
    assert_eq!(due.missed, 299);
    assert_eq!(due.next.map(utc).as_deref(), Some("2026-12-04T10:05:01Z"));
    // Two hours down, a one-minute window: the latest slot (now) still fires; the rest
    // are missed, not fired in a burst.
    let due = every_second.due(
        t("2026-12-04T08:00:00Z"),
        t("2026-12-04T10:00:00Z"),
        hour / 60,
    );
    assert_eq!(
        (due.fire.map(utc), due.missed),
        (Some("2026-12-04T10:00:00Z".into()), 7199)
    );
    // On time: the slot fires, nothing is missed.
    let due = every_second.due(t("2026-12-04T10:00:00Z"), t("2026-12-04T10:00:01Z"), hour);
    assert_eq!(
        (due.fire.map(utc), due.missed),
        (Some("2026-12-04T10:00:01Z".into()), 0)
    );
    // Nothing due yet.
    let due = every_second.due(t("2026-12-04T10:00:00Z"), t("2026-12-04T10:00:00.5Z"), hour);
    assert_eq!((due.fire, due.missed), (None, 0));

    let nightly = spec("0 3 * * *", "Europe/Berlin");
    let due = nightly.due(t("2026-12-01T02:00:00Z"), t("2026-12-04T02:30:00Z"), hour);
    // Slots: the 2nd, 3rd and 4th at 02:00Z (03:00 CET); the 4th fires, two are missed.
    assert_eq!(due.fire.map(utc).as_deref(), Some("2026-12-04T02:00:00Z"));
    assert_eq!(due.missed, 2);
    // Back three hours after the last slot, with a one-hour window: nothing fires.
    let due = nightly.due(t("2026-12-01T02:00:00Z"), t("2026-12-04T05:00:00Z"), hour);
    assert_eq!((due.fire, due.missed), (None, 3));
    assert_eq!(due.next.map(utc).as_deref(), Some("2026-12-05T02:00:00Z"));
}
