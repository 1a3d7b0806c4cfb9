//! A bad field of a request: its path and what is wrong with it. Request checks, kinds'
//! args checks and the API edge all speak in these; the edge turns them into
//! google.rpc.BadRequest details.

/// One bad field in a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    /// The field's path, e.g. `args.steps`.
    pub field: String,
    pub description: String,
}

impl FieldViolation {
    /// The violation of `field`.
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        FieldViolation {
            field: field.into(),
            description: description.into(),
        }
    }
}

/// Checks a name (a namespace, queue, schedule id, principal): 1 to `max` letters,
/// digits, '.', '_' or '-'. One rule for the API's fields and the auth file's names.
pub fn check_name(field: &str, name: &str, max: usize) -> Result<(), FieldViolation> {
    let valid_chars = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if name.is_empty() || name.len() > max || !valid_chars {
        return Err(FieldViolation::new(
            field,
            format!("must be 1 to {max} letters, digits, '.', '_' or '-'"),
        ));
    }
    Ok(())
}

/// Violations as one line: `field: description; field: description`.
pub fn describe(violations: &[FieldViolation]) -> String {
    let parts: Vec<String> = violations
        .iter()
        .map(|v| format!("{}: {}", v.field, v.description))
        .collect();
    parts.join("; ")
}
