//! Field errors as a real API server reports them (`k8s.io/apimachinery`'s `field.Error`:
//! type, field path, bad value, detail) and the `422 Invalid` `Status` built from a list of
//! them (`errors.NewInvalid`).

use crate::api::status::ApiError;
use serde_json::{json, Value};

/// The kinds of field errors, with the cause `reason` and the words a real server prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorType {
    Required,
    Duplicate,
    Invalid,
    TypeInvalid,
    NotSupported,
    Forbidden,
    TooLong,
    TooMany,
}

impl ErrorType {
    /// The `StatusCause.reason` (Go's `field.ErrorType`).
    pub fn reason(self) -> &'static str {
        match self {
            ErrorType::Required => "FieldValueRequired",
            ErrorType::Duplicate => "FieldValueDuplicate",
            ErrorType::Invalid => "FieldValueInvalid",
            ErrorType::TypeInvalid => "FieldValueTypeInvalid",
            ErrorType::NotSupported => "FieldValueNotSupported",
            ErrorType::Forbidden => "FieldValueForbidden",
            ErrorType::TooLong => "FieldValueTooLong",
            ErrorType::TooMany => "FieldValueTooMany",
        }
    }

    fn words(self) -> &'static str {
        match self {
            ErrorType::Required => "Required value",
            ErrorType::Duplicate => "Duplicate value",
            ErrorType::Invalid | ErrorType::TypeInvalid => "Invalid value",
            ErrorType::NotSupported => "Unsupported value",
            ErrorType::Forbidden => "Forbidden",
            ErrorType::TooLong => "Too long",
            ErrorType::TooMany => "Too many",
        }
    }
}

/// The value an error shows: omitted (objects and lists in CEL errors) or a JSON value.
#[derive(Clone, Debug, PartialEq)]
pub enum BadValue {
    Omit,
    Value(Value),
}

/// One field error.
#[derive(Clone, Debug, PartialEq)]
pub struct FieldError {
    pub kind: ErrorType,
    /// The field path as a real server prints it (`spec.items[0].name`, `<nil>` for none).
    pub field: String,
    pub bad: BadValue,
    pub detail: String,
}

impl FieldError {
    pub fn new(
        kind: ErrorType,
        field: impl Into<String>,
        bad: BadValue,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            kind,
            field: field.into(),
            bad,
            detail: detail.into(),
        }
    }

    pub fn invalid(field: impl Into<String>, value: Value, detail: impl Into<String>) -> Self {
        Self::new(ErrorType::Invalid, field, BadValue::Value(value), detail)
    }

    pub fn required(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(
            ErrorType::Required,
            field,
            BadValue::Value(json!("")),
            detail,
        )
    }

    /// The message without the field (Go's `ErrorBody`), which is the cause's `message`.
    pub fn body(&self) -> String {
        let mut s = match self.kind {
            ErrorType::Required | ErrorType::Forbidden | ErrorType::TooLong => {
                self.kind.words().to_string()
            }
            _ => match &self.bad {
                BadValue::Omit => self.kind.words().to_string(),
                BadValue::Value(v) => format!("{}: {}", self.kind.words(), go_value(v)),
            },
        };
        if !self.detail.is_empty() {
            s.push_str(": ");
            s.push_str(&self.detail);
        }
        s
    }

    /// `field: body`, as the error prints in a Status message.
    pub fn message(&self) -> String {
        format!("{}: {}", self.field, self.body())
    }

    /// Whether a real server stops before the CEL rules when it finds this error
    /// (`hasBlockingErr`: the object is too broken for the rules to mean anything).
    pub fn blocks_rules(&self) -> bool {
        matches!(
            self.kind,
            ErrorType::NotSupported
                | ErrorType::Required
                | ErrorType::TooLong
                | ErrorType::TooMany
                | ErrorType::TypeInvalid
        )
    }
}

/// The error a real server adds instead of running the rules over a broken object.
pub fn rules_not_checked() -> FieldError {
    FieldError::invalid(
        "<nil>",
        Value::Null,
        "some validation rules were not checked because the object was invalid; correct the existing errors to complete validation",
    )
}

/// The `422 Invalid` Status for `errs` on object `name` of `kind` in `group`.
pub fn invalid_status(kind: &str, group: &str, name: &str, errs: &[FieldError]) -> ApiError {
    let qualified = if group.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}.{group}")
    };
    let mut seen: Vec<String> = Vec::new();
    for e in errs {
        let m = e.message();
        if !seen.contains(&m) {
            seen.push(m);
        }
    }
    let message = match seen.len() {
        0 => format!("{qualified} {} is invalid", go_quote(name)),
        1 => format!("{qualified} {} is invalid: {}", go_quote(name), seen[0]),
        _ => format!(
            "{qualified} {} is invalid: [{}]",
            go_quote(name),
            seen.join(", ")
        ),
    };
    let causes: Vec<Value> = errs
        .iter()
        .map(|e| json!({"reason": e.kind.reason(), "message": e.body(), "field": e.field}))
        .collect();
    let mut details = json!({"causes": causes});
    for (k, v) in [("name", name), ("group", group), ("kind", kind)] {
        if !v.is_empty() {
            details[k] = json!(v);
        }
    }
    ApiError::new(422, "Invalid", message).details(details)
}

/// A value as Go's `field.Error` prints it: numbers and booleans plainly, strings quoted,
/// anything else as JSON.
pub fn go_value(v: &Value) -> String {
    match v {
        Value::Number(n) => go_number(n),
        Value::Bool(b) => b.to_string(),
        Value::String(s) => go_quote(s),
        other => serde_json::to_string(other).unwrap_or_default(),
    }
}

/// A JSON number as Go prints the `int64` or `float64` it decodes to (`%v`).
pub fn go_number(n: &serde_json::Number) -> String {
    match n.as_i64() {
        Some(i) => i.to_string(),
        None => go_float(n.as_f64().unwrap_or(0.0)),
    }
}

/// A float as Go's `%v` prints it: the shortest representation, exponent form outside
/// [1e-4, 1e21).
pub fn go_float(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        };
    }
    let a = f.abs();
    if a != 0.0 && !(1e-4..1e21).contains(&a) {
        // Rust: 1e-5, 1.5e21; Go: 1e-05, 1.5e+21.
        let s = format!("{f:e}");
        let (mant, exp) = s.split_once('e').unwrap_or((&s, "0"));
        let (sign, digits) = match exp.strip_prefix('-') {
            Some(d) => ('-', d),
            None => ('+', exp),
        };
        return format!("{mant}e{sign}{digits:0>2}");
    }
    if f == f.trunc() {
        return format!("{}", f as i128);
    }
    format!("{f}")
}

/// A string quoted as Go's `%q` does.
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_read_as_a_real_servers() {
        let e = FieldError::new(
            ErrorType::TypeInvalid,
            "spec.paused",
            BadValue::Value(json!("string")),
            "spec.paused in body must be of type boolean: \"string\"",
        );
        assert_eq!(
            e.message(),
            "spec.paused: Invalid value: \"string\": spec.paused in body must be of type boolean: \"string\""
        );
        assert_eq!(
            FieldError::required("spec.x", "").message(),
            "spec.x: Required value"
        );
        let e = FieldError::new(
            ErrorType::TooLong,
            "spec.s",
            BadValue::Value(json!("<value omitted>")),
            "may not be more than 3 bytes",
        );
        assert_eq!(e.body(), "Too long: may not be more than 3 bytes");
        let e = FieldError::new(
            ErrorType::Invalid,
            "spec",
            BadValue::Omit,
            "must be cluster",
        );
        assert_eq!(e.body(), "Invalid value: must be cluster");
        assert_eq!(rules_not_checked().body(), "Invalid value: null: some validation rules were not checked because the object was invalid; correct the existing errors to complete validation");
    }

    #[test]
    fn numbers_print_as_go_does() {
        assert_eq!(go_float(0.0), "0");
        assert_eq!(go_float(1.5), "1.5");
        assert_eq!(go_float(3.0), "3");
        assert_eq!(go_float(1e-5), "1e-05");
        assert_eq!(go_float(1.5e21), "1.5e+21");
        assert_eq!(go_quote("a\"b\n"), "\"a\\\"b\\n\"");
    }

    #[test]
    fn several_errors_aggregate_in_brackets_once_each() {
        let a = FieldError::required("spec.a", "");
        let b = FieldError::required("spec.b", "");
        let s = invalid_status("Widget", "example.com", "w", &[a.clone(), b, a]);
        assert_eq!(
            s.message,
            "Widget.example.com \"w\" is invalid: [spec.a: Required value, spec.b: Required value]"
        );
        assert_eq!(s.details["causes"].as_array().map(Vec::len), Some(3));
        assert_eq!(s.details["group"], "example.com");
    }
}
