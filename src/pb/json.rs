//! `google.protobuf.Struct`/`Value` <-> JSON: job arguments and results cross the API as
//! Structs and live in the engine as JSON. A number that is not finite is refused with
//! its path (JSON has none); whole numbers come back as JSON integers.

use std::collections::BTreeMap;

use prost_types::value::Kind;
use serde_json::{Map, Number, Value as Json};

use crate::model::violation::FieldViolation;

/// Integers up to 2^53 are exact in a protobuf `double`; show them as JSON integers.
const MAX_EXACT_INT: f64 = 9_007_199_254_740_992.0;

/// A Struct as a JSON object; numbers that are not finite are refused (JSON has none).
pub fn struct_to_json(
    s: prost_types::Struct,
    field: &str,
) -> Result<Map<String, Json>, FieldViolation> {
    s.fields
        .into_iter()
        .map(|(k, v)| {
            let path = format!("{field}.{k}");
            Ok((k, value_to_json(v, &path)?))
        })
        .collect()
}

pub fn value_to_json(v: prost_types::Value, field: &str) -> Result<Json, FieldViolation> {
    Ok(match v.kind {
        Some(Kind::NullValue(_)) => Json::Null,
        // A Value with no kind is what a client sends when it names the kind field in a
        // way its library does not know (JavaScript's protobufjs wants numberValue, not
        // number_value): say so rather than read it as null.
        None => {
            return Err(FieldViolation::new(
                field,
                "holds no value: a google.protobuf.Value needs one of null_value, \
                 number_value, string_value, bool_value, struct_value or list_value \
                 (numberValue, stringValue, ... in JavaScript)",
            ));
        }
        Some(Kind::BoolValue(b)) => Json::Bool(b),
        Some(Kind::StringValue(s)) => Json::String(s),
        Some(Kind::NumberValue(n)) => {
            number_to_json(n).ok_or_else(|| FieldViolation::new(field, "numbers must be finite"))?
        }
        Some(Kind::StructValue(s)) => Json::Object(struct_to_json(s, field)?),
        Some(Kind::ListValue(list)) => Json::Array(
            list.values
                .into_iter()
                .enumerate()
                .map(|(i, v)| value_to_json(v, &format!("{field}[{i}]")))
                .collect::<Result<_, _>>()?,
        ),
    })
}

fn number_to_json(n: f64) -> Option<Json> {
    if n.fract() == 0.0 && n.abs() <= MAX_EXACT_INT {
        // Exact: the cast cannot lose anything, and typed args see an integer.
        return Some(Json::Number(Number::from(n as i64)));
    }
    Number::from_f64(n).map(Json::Number)
}

/// JSON as a protobuf Value.
pub fn json_to_value(json: &Json) -> prost_types::Value {
    let kind = match json {
        Json::Null => Kind::NullValue(0),
        Json::Bool(b) => Kind::BoolValue(*b),
        Json::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        Json::String(s) => Kind::StringValue(s.clone()),
        Json::Array(items) => Kind::ListValue(prost_types::ListValue {
            values: items.iter().map(json_to_value).collect(),
        }),
        Json::Object(map) => Kind::StructValue(json_to_struct(map)),
    };
    prost_types::Value { kind: Some(kind) }
}

/// A JSON object as a protobuf Struct.
pub fn json_to_struct(map: &Map<String, Json>) -> prost_types::Struct {
    prost_types::Struct {
        fields: map
            .iter()
            .map(|(k, v)| (k.clone(), json_to_value(v)))
            .collect::<BTreeMap<_, _>>(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_round_trips_through_struct() {
        let original =
            json!({"n": 3, "x": 1.5, "s": "a", "b": true, "z": null, "l": [1, {"k": "v"}]});
        let map = original.as_object().unwrap();
        let back = struct_to_json(json_to_struct(map), "args").unwrap();
        assert_eq!(Json::Object(back), original);
    }

    #[test]
    fn non_finite_numbers_are_refused_with_their_path() {
        let mut s = prost_types::Struct::default();
        s.fields.insert(
            "n".into(),
            prost_types::Value {
                kind: Some(Kind::NumberValue(f64::NAN)),
            },
        );
        assert_eq!(struct_to_json(s, "args").unwrap_err().field, "args.n");
    }
}
