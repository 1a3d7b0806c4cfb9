//! Secret args: fields a kind's JSON Schema marks `writeOnly` (JSON Schema's own word for
//! "sent, never returned"; `http.request`'s header values are the first). The job keeps
//! them, its handler reads them, and every answer that shows args (GetStatus, ListJobs,
//! Submit's, a schedule's template) shows [`REDACTED`] in their place.

use std::collections::BTreeMap;

use serde_json::Value;

/// What a secret value is shown as.
pub const REDACTED: &str = "[redacted]";

/// The schema's secret places, as a tree over the args' shape.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Secrets {
    /// This value itself is secret.
    whole: bool,
    /// Named properties with secrets at or under them.
    properties: BTreeMap<String, Secrets>,
    /// Every other property's value (a map's values: `additionalProperties`).
    others: Option<Box<Secrets>>,
    /// Every item of an array.
    items: Option<Box<Secrets>>,
}

/// How deep `$ref`s are followed: a recursive schema stops here.
const MAX_DEPTH: usize = 16;

impl Secrets {
    /// The secret places of a schema; `None` if it has none.
    pub fn from_schema(schema: &Value) -> Option<Secrets> {
        let secrets = Self::walk(schema, schema, 0);
        (secrets != Secrets::default()).then_some(secrets)
    }

    fn walk(node: &Value, root: &Value, depth: usize) -> Secrets {
        let mut secrets = Secrets::default();
        if depth > MAX_DEPTH {
            return secrets;
        }
        let node = match node.get("$ref").and_then(Value::as_str) {
            Some(reference) => resolve(root, reference).unwrap_or(&Value::Null),
            None => node,
        };
        secrets.whole = node.get("writeOnly") == Some(&Value::Bool(true));
        if let Some(properties) = node.get("properties").and_then(Value::as_object) {
            for (name, schema) in properties {
                let inner = Self::walk(schema, root, depth + 1);
                if inner != Secrets::default() {
                    secrets.properties.insert(name.clone(), inner);
                }
            }
        }
        let nested = |key: &str| {
            let inner = Self::walk(node.get(key)?, root, depth + 1);
            (inner != Secrets::default()).then(|| Box::new(inner))
        };
        secrets.others = nested("additionalProperties");
        secrets.items = nested("items");
        secrets
    }

    /// Replaces every secret value in `args` with [`REDACTED`].
    pub fn redact(&self, args: &mut Value) {
        if self.whole {
            *args = Value::String(REDACTED.into());
            return;
        }
        match args {
            Value::Object(fields) => {
                for (name, value) in fields.iter_mut() {
                    match (self.properties.get(name), &self.others) {
                        (Some(inner), _) => inner.redact(value),
                        (None, Some(others)) => others.redact(value),
                        (None, None) => {}
                    }
                }
            }
            Value::Array(items) => {
                if let Some(inner) = &self.items {
                    items.iter_mut().for_each(|item| inner.redact(item));
                }
            }
            _ => {}
        }
    }
}

impl Secrets {
    /// Puts the stored secret back where `new` holds the redaction mark: a client that read
    /// a schedule's template (secrets redacted) and sends it back changes only what it
    /// changed, never a secret into the mark.
    pub fn restore(&self, new: &mut Value, old: &Value) {
        if self.whole {
            if new.as_str() == Some(REDACTED) {
                *new = old.clone();
            }
            return;
        }
        match (new, old) {
            (Value::Object(fields), Value::Object(stored)) => {
                for (name, value) in fields.iter_mut() {
                    let inner = self.properties.get(name).or(self.others.as_deref());
                    if let (Some(inner), Some(before)) = (inner, stored.get(name)) {
                        inner.restore(value, before);
                    }
                }
            }
            (Value::Array(items), Value::Array(stored)) => {
                if let Some(inner) = &self.items {
                    for (item, before) in items.iter_mut().zip(stored) {
                        inner.restore(item, before);
                    }
                }
            }
            _ => {}
        }
    }
}

/// A local `$ref` (`#/$defs/Name`, `#/definitions/Name`).
fn resolve<'a>(root: &'a Value, reference: &str) -> Option<&'a Value> {
    root.pointer(reference.strip_prefix('#')?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn write_only_values_are_redacted_wherever_the_schema_puts_them() {
        let schema = json!({
            "properties": {
                "url": {"type": "string"},
                "headers": {"type": "object", "additionalProperties": {"type": "string", "writeOnly": true}},
                "auth": {"$ref": "#/$defs/Auth"},
                "keys": {"type": "array", "items": {"type": "string", "writeOnly": true}}
            },
            "$defs": {"Auth": {"properties": {"password": {"writeOnly": true}, "user": {}}}}
        });
        let secrets = Secrets::from_schema(&schema).unwrap();
        let mut args = json!({
            "url": "https://x", "headers": {"Authorization": "Bearer s3cret"},
            "auth": {"user": "me", "password": "hunter2"}, "keys": ["a", "b"], "extra": 1
        });
        secrets.redact(&mut args);
        assert_eq!(
            args,
            json!({
                "url": "https://x", "headers": {"Authorization": REDACTED},
                "auth": {"user": "me", "password": REDACTED}, "keys": [REDACTED, REDACTED], "extra": 1
            })
        );
        assert_eq!(
            Secrets::from_schema(&json!({"properties": {"a": {}}})),
            None
        );
        // A schema that refers to itself ends at the depth limit.
        let looped = json!({"$ref": "#"});
        assert_eq!(Secrets::from_schema(&looped), None);
    }
}
