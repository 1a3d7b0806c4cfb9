//! Compact serde forms for the times and durations in stored job records: one integer of
//! nanoseconds (since the Unix epoch, for times) instead of serde's default two-field
//! struct. A record has up to a dozen of them, so this takes about a quarter off every
//! record the stores keep and write. Reading accepts the struct form too, so records
//! written by earlier versions still load; a value too large for 64 bits of nanoseconds
//! (after the year 2554) is written in the struct form.
//!
//! Use with `#[serde(with = "compact::time")]`, `compact::opt_time`, `compact::duration`
//! or `compact::opt_duration`.

use std::fmt;
use std::marker::PhantomData;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserializer, Serialize, Serializer};

fn serialize_duration<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    match u64::try_from(d.as_nanos()) {
        Ok(nanos) => s.serialize_u64(nanos),
        Err(_) => d.serialize(s),
    }
}

fn serialize_time<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    match t.duration_since(UNIX_EPOCH) {
        Ok(since) => match u64::try_from(since.as_nanos()) {
            Ok(nanos) => s.serialize_u64(nanos),
            Err(_) => t.serialize(s),
        },
        // serde's own form refuses these too, with its message.
        Err(_) => t.serialize(s),
    }
}

/// Reads nanoseconds, or serde's struct form of a `Duration` (`secs`, `nanos`) or a
/// `SystemTime` (`secs_since_epoch`, `nanos_since_epoch`), as a duration.
struct NanosVisitor;

impl<'de> Visitor<'de> for NanosVisitor {
    type Value = Duration;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("nanoseconds as an integer, or a {secs, nanos} struct")
    }

    fn visit_u64<E: de::Error>(self, nanos: u64) -> Result<Duration, E> {
        Ok(Duration::from_nanos(nanos))
    }

    fn visit_i64<E: de::Error>(self, nanos: i64) -> Result<Duration, E> {
        u64::try_from(nanos)
            .map(Duration::from_nanos)
            .map_err(|_| E::custom("a negative time or duration"))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Duration, A::Error> {
        let (mut secs, mut nanos) = (None, None);
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "secs" | "secs_since_epoch" => secs = Some(map.next_value::<u64>()?),
                "nanos" | "nanos_since_epoch" => nanos = Some(map.next_value::<u32>()?),
                _ => {
                    map.next_value::<de::IgnoredAny>()?;
                }
            }
        }
        let secs = secs.ok_or_else(|| de::Error::missing_field("secs"))?;
        let nanos = nanos.ok_or_else(|| de::Error::missing_field("nanos"))?;
        if nanos >= 1_000_000_000 {
            return Err(de::Error::custom("nanos must be under one second"));
        }
        Ok(Duration::new(secs, nanos))
    }
}

fn deserialize_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    d.deserialize_any(NanosVisitor)
}

fn deserialize_time<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
    let since = d.deserialize_any(NanosVisitor)?;
    UNIX_EPOCH
        .checked_add(since)
        .ok_or_else(|| de::Error::custom("a time out of range"))
}

/// The two kinds of value this module reads.
trait Compact: Sized {
    fn read<'de, D: Deserializer<'de>>(d: D) -> Result<Self, D::Error>;
}

impl Compact for SystemTime {
    fn read<'de, D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        deserialize_time(d)
    }
}

impl Compact for Duration {
    fn read<'de, D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        deserialize_duration(d)
    }
}

/// Reads null as `None`, anything else as `T`.
struct OptVisitor<T>(PhantomData<T>);

impl<'de, T: Compact> Visitor<'de> for OptVisitor<T> {
    type Value = Option<T>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a time, a duration or null")
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        T::read(d).map(Some)
    }
}

/// `SystemTime` as nanoseconds since the Unix epoch.
pub mod time {
    use super::*;

    pub fn serialize<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        serialize_time(t, s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        deserialize_time(d)
    }
}

/// `Option<SystemTime>` as nanoseconds since the Unix epoch, or null.
pub mod opt_time {
    use super::*;

    pub fn serialize<S: Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => serialize_time(t, s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SystemTime>, D::Error> {
        d.deserialize_option(OptVisitor(PhantomData))
    }
}

/// `Duration` as nanoseconds.
pub mod duration {
    use super::*;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        serialize_duration(d, s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        deserialize_duration(d)
    }
}

/// `Option<Duration>` as nanoseconds, or null.
pub mod opt_duration {
    use super::*;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => serialize_duration(d, s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        d.deserialize_option(OptVisitor(PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};
    use serde_json::json;

    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Record {
        #[serde(with = "time")]
        at: SystemTime,
        #[serde(with = "opt_time", default, skip_serializing_if = "Option::is_none")]
        due: Option<SystemTime>,
        #[serde(with = "duration")]
        pause: Duration,
        #[serde(
            with = "opt_duration",
            default,
            skip_serializing_if = "Option::is_none"
        )]
        limit: Option<Duration>,
    }

    #[test]
    fn round_trips_exactly_as_one_integer() {
        let at = UNIX_EPOCH + Duration::new(1_795_653_874, 738_676_367);
        let record = Record {
            at,
            due: Some(at + Duration::from_secs(86_400)),
            pause: Duration::new(1, 5),
            limit: None,
        };
        let text = serde_json::to_string(&record).unwrap();
        assert_eq!(
            text,
            r#"{"at":1795653874738676367,"due":1795740274738676367,"pause":1000000005}"#
        );
        assert_eq!(serde_json::from_str::<Record>(&text).unwrap(), record);
    }

    #[test]
    fn reads_the_struct_form_earlier_versions_wrote() {
        let old = json!({
            "at": {"secs_since_epoch": 1_795_653_874u64, "nanos_since_epoch": 738_676_367},
            "due": {"secs_since_epoch": 10, "nanos_since_epoch": 0},
            "pause": {"secs": 300, "nanos": 0},
            "limit": {"secs": 2, "nanos": 500},
        });
        let record: Record = serde_json::from_value(old).unwrap();
        assert_eq!(
            record.at,
            UNIX_EPOCH + Duration::new(1_795_653_874, 738_676_367)
        );
        assert_eq!(record.due, Some(UNIX_EPOCH + Duration::from_secs(10)));
        assert_eq!(record.pause, Duration::from_secs(300));
        assert_eq!(record.limit, Some(Duration::new(2, 500)));
        let bad = json!({"at": -1, "pause": {"secs": 1, "nanos": 2_000_000_000u64}});
        assert!(serde_json::from_value::<Record>(bad).is_err());
    }

    #[test]
    fn values_past_64_bits_of_nanoseconds_keep_the_struct_form() {
        let record = Record {
            at: UNIX_EPOCH,
            due: None,
            pause: Duration::from_secs(u64::MAX / 1_000),
            limit: Some(Duration::MAX),
        };
        let text = serde_json::to_string(&record).unwrap();
        assert_eq!(serde_json::from_str::<Record>(&text).unwrap(), record);
    }
}
