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

/// Violations as one line: `field: description; field: description`.
pub fn describe(violations: &[FieldViolation]) -> String {
    let parts: Vec<String> = violations
        .iter()
        .map(|v| format!("{}: {}", v.field, v.description))
        .collect();
    parts.join("; ")
}
