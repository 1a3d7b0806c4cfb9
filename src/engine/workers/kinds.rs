//! Remote kinds: the kinds workers declared, per namespace, with each one's args schema
//! compiled once. Submit checks a remote kind's args here, naming the bad field as a
//! built-in kind's check does. Declarations are stored before they count, so a kind stays
//! known across restarts and while no worker is connected.

use crate::model::secret::Secrets;
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use serde_json::Value;

use crate::engine::EngineError;
use crate::jobs::registry::{ArgsError, Registry};
use crate::model::violation::FieldViolation;
use crate::model::worker::{RemoteKind, WorkerHello};
use crate::store::Store;

/// The most violations one Submit is told about.
const MAX_VIOLATIONS: usize = 20;

/// A declared kind and its compiled schema.
pub struct Declared {
    pub kind: RemoteKind,
    validator: Option<jsonschema::Validator>,
    /// The schema's `writeOnly` fields, redacted wherever args are shown.
    pub secrets: Option<Secrets>,
}

impl std::fmt::Debug for Declared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Declared")
            .field("kind", &self.kind)
            .finish()
    }
}

impl Declared {
    fn new(kind: RemoteKind) -> Result<Self, String> {
        let validator = match &kind.args_schema {
            Some(schema) => Some(jsonschema::validator_for(schema).map_err(|e| e.to_string())?),
            None => None,
        };
        let secrets = kind.args_schema.as_ref().and_then(Secrets::from_schema);
        Ok(Declared {
            kind,
            validator,
            secrets,
        })
    }

    /// Checks args against the schema, naming each bad field (`args.paths[0]`).
    pub fn validate(&self, args: &Value) -> Result<(), ArgsError> {
        let Some(validator) = &self.validator else {
            return Ok(());
        };
        let violations: Vec<FieldViolation> = validator
            .iter_errors(args)
            .take(MAX_VIOLATIONS)
            .map(|e| FieldViolation::new(field_of(e.instance_path().as_str()), e.to_string()))
            .collect();
        if violations.is_empty() {
            return Ok(());
        }
        Err(ArgsError::from_violations(violations))
    }
}

/// `/paths/0` as `args.paths[0]`: how every other violation names a field.
fn field_of(pointer: &str) -> String {
    let mut field = String::from("args");
    for part in pointer.split('/').skip(1) {
        let part = part.replace("~1", "/").replace("~0", "~");
        if part.parse::<usize>().is_ok() {
            field.push_str(&format!("[{part}]"));
        } else {
            field.push('.');
            field.push_str(&part);
        }
    }
    field
}

/// Every declared remote kind, by namespace and name.
#[derive(Debug, Default)]
pub struct RemoteKinds {
    kinds: RwLock<BTreeMap<(String, String), Arc<Declared>>>,
}

impl RemoteKinds {
    /// Loads the stored declarations (a schema that no longer compiles is logged and the
    /// kind kept without one).
    pub async fn load(store: &dyn Store) -> Result<Self, EngineError> {
        let mut kinds = BTreeMap::new();
        for (namespace, kind) in store.remote_kinds().await? {
            let name = kind.name.clone();
            let declared = Declared::new(kind.clone()).unwrap_or_else(|e| {
                tracing::warn!(%namespace, kind = %name, error = %e, "a stored args schema does not compile; ignoring it");
                // Its secrets still hold: redaction does not need a compiled schema.
                let secrets = kind.args_schema.as_ref().and_then(Secrets::from_schema);
                Declared {
                    kind,
                    validator: None,
                    secrets,
                }
            });
            kinds.insert((namespace, name), Arc::new(declared));
        }
        Ok(RemoteKinds {
            kinds: RwLock::new(kinds),
        })
    }

    /// A declared kind of a namespace.
    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<Declared>> {
        let kinds = self.kinds.read().unwrap_or_else(|e| e.into_inner());
        kinds
            .get(&(namespace.to_string(), name.to_string()))
            .cloned()
    }

    /// The declared kinds of a namespace, by name.
    pub fn of(&self, namespace: &str) -> Vec<Arc<Declared>> {
        let kinds = self.kinds.read().unwrap_or_else(|e| e.into_inner());
        let range = kinds.range((namespace.to_string(), String::new())..);
        range
            .take_while(|((ns, _), _)| ns == namespace)
            .map(|(_, k)| k.clone())
            .collect()
    }

    /// Takes a worker's declarations: refuses a built-in kind's name or a schema that does
    /// not compile (naming the field), stores new or changed ones, then makes them count.
    pub async fn declare(
        &self,
        store: &dyn Store,
        builtin: &Registry,
        hello: &WorkerHello,
        now: SystemTime,
    ) -> Result<(), EngineError> {
        let mut changed = Vec::new();
        for (i, kind) in hello.kinds.iter().enumerate() {
            if builtin.get(&kind.name).is_some() {
                return Err(EngineError::KindNotAllowed(FieldViolation::new(
                    format!("hello.kinds[{i}].name"),
                    format!(
                        "{:?} is built into the server; a worker may not run it",
                        kind.name
                    ),
                )));
            }
            let declared = Declared::new(kind.clone()).map_err(|e| {
                EngineError::OutOfRange(FieldViolation::new(
                    format!("hello.kinds[{i}].args_schema"),
                    format!("not a valid JSON Schema: {e}"),
                ))
            })?;
            let same = self
                .get(&hello.namespace, &kind.name)
                .is_some_and(|d| d.kind == *kind);
            if !same {
                changed.push((kind.clone(), declared));
            }
        }
        if changed.is_empty() {
            return Ok(());
        }
        let kinds: Vec<RemoteKind> = changed.iter().map(|(k, _)| k.clone()).collect();
        store
            .put_remote_kinds(&hello.namespace, &kinds, now)
            .await?;
        let mut map = self.kinds.write().unwrap_or_else(|e| e.into_inner());
        for (kind, declared) in changed {
            map.insert((hello.namespace.clone(), kind.name), Arc::new(declared));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_schema_violation_names_the_field_as_args_paths() {
        let kind = RemoteKind {
            name: "images.resize".into(),
            description: String::new(),
            args_schema: Some(json!({
                "type": "object",
                "required": ["paths"],
                "properties": {"paths": {"type": "array", "items": {"type": "string"}}}
            })),
            max_attempts: None,
        };
        let declared = Declared::new(kind).unwrap();
        assert!(declared.validate(&json!({"paths": ["a.png"]})).is_ok());
        let err = declared
            .validate(&json!({"paths": ["a.png", 7]}))
            .unwrap_err();
        assert_eq!(err.violations[0].field, "args.paths[1]");
        let err = declared.validate(&json!({})).unwrap_err();
        assert_eq!(err.violations[0].field, "args");
        assert!(err.violations[0].description.contains("paths"), "{err:?}");
    }

    #[test]
    fn a_schema_that_does_not_compile_is_refused() {
        let kind = RemoteKind {
            name: "k".into(),
            description: String::new(),
            args_schema: Some(json!({"type": 12})),
            max_attempts: None,
        };
        assert!(Declared::new(kind).is_err());
    }
}
