//! OpenAPI value validation of custom resources as the apiextensions-apiserver does it
//! (kube-openapi's validator, its errors converted to field errors): types, `nullable`,
//! `enum`, string lengths and patterns, formats, numeric bounds, item and property counts,
//! `required`, `allOf`/`anyOf`/`oneOf`/`not`; with validation ratcheting on updates (a value
//! equal to the one it replaces is not re-judged), and the uniqueness invariants of
//! `x-kubernetes-list-type: set|map` lists.

use super::errors::{go_float, go_quote, BadValue, ErrorType, FieldError};
use super::formats;
use super::structural::Node;
use serde_json::{json, Value};

/// Validates `value` against `node`. `prefix` is the field path of the validated value
/// (None for the whole object, `status` for a status write: errors read `status.x`, and
/// their details name the path relative to it, as a real server's do). `old`, on
/// updates, is the value being replaced: parts equal to their old selves are not judged.
pub fn validate(
    node: &Node,
    value: &Value,
    old: Option<&Value>,
    prefix: Option<&str>,
) -> Vec<FieldError> {
    let mut v = Validator {
        prefix,
        errs: Vec::new(),
    };
    v.node(node, value, old, "");
    v.errs
}

struct Validator<'a> {
    prefix: Option<&'a str>,
    errs: Vec<FieldError>,
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn child_name(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

/// A numeric bound as the validator prints it for this value: as an integer against an
/// integer value, else as a float.
fn bound(b: f64, integer_value: bool) -> String {
    if integer_value {
        (b as i64).to_string()
    } else {
        go_float(b)
    }
}

impl Validator<'_> {
    /// The field path of the value at validator path `name`.
    fn field(&self, name: &str) -> String {
        match (self.prefix, name) {
            (None, "") => "<nil>".to_string(),
            (None, n) => n.to_string(),
            (Some(p), "") => p.to_string(),
            (Some(p), n) => format!("{p}.{n}"),
        }
    }

    /// An error that is not about one field (kube-openapi's composite errors): reported at
    /// the validated value's path with an empty value.
    fn generic(&mut self, detail: String) {
        let field = self.field("");
        self.errs
            .push(FieldError::invalid(field, json!(""), detail));
    }

    fn push(&mut self, kind: ErrorType, name: &str, bad: Value, detail: String) {
        let field = self.field(name);
        self.errs
            .push(FieldError::new(kind, field, BadValue::Value(bad), detail));
    }

    fn node(&mut self, s: &Node, v: &Value, old: Option<&Value>, name: &str) {
        if old == Some(v) {
            return; // ratcheting: an unchanged value is not re-judged
        }
        let types: Vec<&str> = if s.int_or_string {
            vec!["integer", "string"]
        } else if s.ty.is_empty() {
            vec![]
        } else {
            vec![s.ty.as_str()]
        };
        let vt = json_type(v);
        // type
        if v.is_null() {
            if !types.is_empty() && !s.nullable {
                let detail = format!(
                    "{name} in body must be of type {}: \"null\"",
                    types.join(",")
                );
                self.push(ErrorType::TypeInvalid, name, json!("null"), detail);
            }
            self.enumeration(s, v, name);
            return;
        }
        if !types.is_empty() {
            let float_int = vt == "number"
                && v.as_f64().is_some_and(|f| f == f.trunc())
                && types.contains(&"integer");
            let int_float = vt == "integer" && types.contains(&"number");
            if !(types.contains(&vt) || float_int || int_float) {
                let detail = format!(
                    "{name} in body must be of type {}: {}",
                    types.join(","),
                    go_quote(vt)
                );
                self.push(ErrorType::TypeInvalid, name, json!(vt), detail);
                self.enumeration(s, v, name);
                return;
            }
        }
        self.combinators(s, v, old, name);
        match v {
            Value::String(text) => self.string(s, text, name),
            Value::Number(_) => self.number(s, v, name),
            _ => {}
        }
        if let Value::Array(items) = v {
            self.array(s, items, old, name);
        }
        self.enumeration(s, v, name);
        if let Value::Object(m) = v {
            self.object(s, m, old, name);
        }
    }

    fn combinators(&mut self, s: &Node, v: &Value, old: Option<&Value>, name: &str) {
        let path = go_quote(name);
        let prefix = self.prefix;
        let run = |n: &Node| {
            let mut sub = Validator {
                prefix,
                errs: Vec::new(),
            };
            sub.node(n, v, old, name);
            sub.errs
        };
        if !s.any_of.is_empty() {
            let results: Vec<Vec<FieldError>> = s.any_of.iter().map(run).collect();
            if !results.iter().any(Vec::is_empty) {
                self.generic(format!("{path} must validate at least one schema (anyOf)"));
                if let Some(best) = results.iter().min_by_key(|r| r.len()) {
                    self.errs.extend(best.iter().cloned());
                }
            }
        }
        if !s.one_of.is_empty() {
            let results: Vec<Vec<FieldError>> = s.one_of.iter().map(run).collect();
            let valid = results.iter().filter(|r| r.is_empty()).count();
            if valid != 1 {
                let more = if valid == 0 {
                    "Found none valid".to_string()
                } else {
                    format!("Found {valid} valid alternatives")
                };
                self.generic(format!(
                    "{path} must validate one and only one schema (oneOf). {more}"
                ));
                if valid == 0 {
                    if let Some(best) = results.iter().min_by_key(|r| r.len()) {
                        self.errs.extend(best.iter().cloned());
                    }
                }
            }
        }
        if !s.all_of.is_empty() {
            let results: Vec<Vec<FieldError>> = s.all_of.iter().map(run).collect();
            let valid = results.iter().filter(|r| r.is_empty()).count();
            for r in &results {
                self.errs.extend(r.iter().cloned());
            }
            if valid != results.len() {
                let more = if valid == 0 { ". None validated" } else { "" };
                self.generic(format!(
                    "{path} must validate all the schemas (allOf){more}"
                ));
            }
        }
        if let Some(not) = &s.not {
            if run(not).is_empty() {
                self.generic(format!("{path} must not validate the schema (not)"));
            }
        }
    }

    fn string(&mut self, s: &Node, text: &str, name: &str) {
        let len = text.chars().count() as i64;
        if let Some(max) = s.max_length.filter(|m| len > *m) {
            let bytes = if max == 1 { "byte" } else { "bytes" };
            let field = self.field(name);
            self.errs.push(FieldError::new(
                ErrorType::TooLong,
                field,
                BadValue::Value(json!("<value omitted>")),
                format!("may not be more than {max} {bytes}"),
            ));
        } else if let Some(min) = s.min_length.filter(|m| len < *m) {
            self.push(
                ErrorType::Invalid,
                name,
                json!(text),
                format!("{name} in body should be at least {min} chars long"),
            );
        } else if let Some((src, compiled)) = &s.pattern {
            match compiled {
                Ok(rx) if rx.is_match(text) => {}
                Ok(_) => self.push(
                    ErrorType::Invalid,
                    name,
                    json!(text),
                    format!("{name} in body should match '{src}'"),
                ),
                Err(e) => self.push(
                    ErrorType::Invalid,
                    name,
                    json!(text),
                    format!("{name} in body should match '{src}, but pattern is invalid: {e}'"),
                ),
            }
        }
        if !s.checked_format.is_empty() && !formats::valid(&s.checked_format, text) {
            self.push(
                ErrorType::TypeInvalid,
                name,
                json!(text),
                format!(
                    "{name} in body must be of type {}: {}",
                    s.checked_format,
                    go_quote(text)
                ),
            );
        }
    }

    fn number(&mut self, s: &Node, v: &Value, name: &str) {
        let integer_value = v.is_i64();
        let f = v.as_f64().unwrap_or(0.0);
        if s.ty == "integer" && s.format == "int32" && integer_value {
            let i = v.as_i64().unwrap_or(0);
            if i32::try_from(i).is_err() {
                self.generic(format!(
                    "Checked value must be of type integer with format int32 in {name}"
                ));
            }
        }
        if let Some(m) = s.multiple_of {
            let bad = if integer_value && m >= 1.0 {
                let (i, mi) = (v.as_i64().unwrap_or(0), m as i64);
                mi != 0 && i % mi != 0
            } else {
                // As go-openapi computes it (the float rounding differs by branch).
                let q = if m < 1.0 { (1.0 / m) * f } else { f / m };
                q != q.trunc()
            };
            if m <= 0.0 {
                self.generic(format!(
                    "factor MultipleOf declared for {name} must be positive: {}",
                    go_float(m)
                ));
            } else if bad {
                self.push(
                    ErrorType::Invalid,
                    name,
                    v.clone(),
                    format!(
                        "{name} in body should be a multiple of {}",
                        bound(m, integer_value)
                    ),
                );
            }
        }
        if let Some(max) = s.maximum {
            let (over, shown) = if integer_value {
                let i = v.as_i64().unwrap_or(0);
                let m = max as i64;
                (
                    if s.exclusive_maximum { i >= m } else { i > m },
                    bound(max, true),
                )
            } else {
                (
                    if s.exclusive_maximum {
                        f >= max
                    } else {
                        f > max
                    },
                    bound(max, false),
                )
            };
            if over {
                let op = if s.exclusive_maximum {
                    "less than"
                } else {
                    "less than or equal to"
                };
                self.push(
                    ErrorType::Invalid,
                    name,
                    v.clone(),
                    format!("{name} in body should be {op} {shown}"),
                );
            }
        }
        if let Some(min) = s.minimum {
            let (under, shown) = if integer_value {
                let i = v.as_i64().unwrap_or(0);
                let m = min as i64;
                (
                    if s.exclusive_minimum { i <= m } else { i < m },
                    bound(min, true),
                )
            } else {
                (
                    if s.exclusive_minimum {
                        f <= min
                    } else {
                        f < min
                    },
                    bound(min, false),
                )
            };
            if under {
                let op = if s.exclusive_minimum {
                    "greater than"
                } else {
                    "greater than or equal to"
                };
                self.push(
                    ErrorType::Invalid,
                    name,
                    v.clone(),
                    format!("{name} in body should be {op} {shown}"),
                );
            }
        }
    }

    fn array(&mut self, s: &Node, items: &[Value], old: Option<&Value>, name: &str) {
        if let Some(is) = &s.items {
            let old_items = old.and_then(Value::as_array);
            for (i, item) in items.iter().enumerate() {
                let old_item = old_items.and_then(|o| s.correlated_item(o, item));
                self.node(is, item, old_item, &format!("{name}[{i}]"));
            }
        }
        let n = items.len() as i64;
        if let Some(min) = s.min_items.filter(|m| n < *m) {
            self.push(
                ErrorType::Invalid,
                name,
                json!(n),
                format!("{name} in body should have at least {min} items"),
            );
        }
        if let Some(max) = s.max_items.filter(|m| n > *m) {
            let field = self.field(name);
            self.errs.push(too_many(field, n, max));
        }
    }

    fn enumeration(&mut self, s: &Node, v: &Value, name: &str) {
        let Some(values) = &s.enumeration else {
            return;
        };
        let same = |e: &Value| match (e, v) {
            (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
            (a, b) => a == b,
        };
        if values.iter().any(same) {
            return;
        }
        let supported: Vec<String> = values
            .iter()
            .map(|e| match e {
                Value::String(s) => go_quote(s),
                other => go_quote(&serde_json::to_string(other).unwrap_or_default()),
            })
            .collect();
        self.push(
            ErrorType::NotSupported,
            name,
            v.clone(),
            format!("supported values: {}", supported.join(", ")),
        );
    }

    fn object(
        &mut self,
        s: &Node,
        m: &serde_json::Map<String, Value>,
        old: Option<&Value>,
        name: &str,
    ) {
        let n = m.len() as i64;
        if let Some(min) = s.min_properties.filter(|x| n < *x) {
            self.push(
                ErrorType::Invalid,
                name,
                json!(n),
                format!("{name} in body should have at least {min} properties"),
            );
        }
        if let Some(max) = s.max_properties.filter(|x| n > *x) {
            let field = self.field(name);
            self.errs.push(too_many(field, n, max));
        }
        let old_map = old.and_then(Value::as_object);
        for (k, child) in m {
            let schema = match s.properties.get(k) {
                Some(p) => p,
                None => match &s.additional {
                    Some(a) => a,
                    None => continue,
                },
            };
            let old_child = if s.properties.contains_key(k) || s.map_correlatable() {
                old_map.and_then(|o| o.get(k))
            } else {
                None
            };
            // The resource's apiVersion and kind are never ratcheted.
            let old_child =
                old_child.filter(|_| !(name.is_empty() && (k == "apiVersion" || k == "kind")));
            self.node(schema, child, old_child, &child_name(name, k));
        }
        for r in &s.required {
            if !m.contains_key(r) {
                let field = self.field(&child_name(name, r));
                self.errs.push(FieldError::required(field, ""));
            }
        }
    }
}

fn too_many(field: String, actual: i64, max: i64) -> FieldError {
    let items = if max == 1 { "item" } else { "items" };
    FieldError::new(
        ErrorType::TooMany,
        field,
        BadValue::Value(json!(actual)),
        format!("must have at most {max} {items}"),
    )
}

/// The uniqueness invariants of `x-kubernetes-list-type: set` (whole items) and `map`
/// (the key fields) lists anywhere in `obj` (`ValidateListSetsAndMaps`).
pub fn list_sets_and_maps(node: &Node, obj: &Value, path: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    list_walk(node, obj, path, &mut errs);
    errs
}

fn list_walk(s: &Node, v: &Value, path: &str, errs: &mut Vec<FieldError>) {
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                let sub = match s.properties.get(k) {
                    Some(p) => Some((p, child_name(path, k))),
                    None => s.additional.as_deref().map(|a| (a, format!("{path}[{k}]"))),
                };
                if let Some((sub, p)) = sub {
                    list_walk(sub, child, &p, errs);
                }
            }
        }
        Value::Array(items) => {
            match s.list_type.as_deref() {
                Some("set") => {
                    for i in first_repeats(items.to_vec()) {
                        errs.push(FieldError::new(
                            ErrorType::Duplicate,
                            format!("{path}[{i}]"),
                            BadValue::Value(items[i].clone()),
                            "",
                        ));
                    }
                }
                Some("map") => {
                    if let Some((i, bad)) = items
                        .iter()
                        .enumerate()
                        .find(|(_, x)| !(x.is_object() || x.is_null()))
                    {
                        errs.push(FieldError::invalid(
                            format!("{path}[{i}]"),
                            bad.clone(),
                            "must be an object for an array of list-type map",
                        ));
                    } else {
                        let keys: Vec<Value> = items
                            .iter()
                            .map(|x| {
                                let mut key = serde_json::Map::new();
                                for k in &s.list_map_keys {
                                    if let Some(kv) = x.get(k) {
                                        key.insert(k.clone(), kv.clone());
                                    }
                                }
                                Value::Object(key)
                            })
                            .collect();
                        for i in first_repeats(keys.clone()) {
                            errs.push(FieldError::new(
                                ErrorType::Duplicate,
                                format!("{path}[{i}]"),
                                BadValue::Value(keys[i].clone()),
                                "",
                            ));
                        }
                    }
                }
                _ => {}
            }
            if let Some(is) = &s.items {
                for (i, item) in items.iter().enumerate() {
                    list_walk(is, item, &format!("{path}[{i}]"), errs);
                }
            }
        }
        _ => {}
    }
}

/// The index of the second occurrence of every value that occurs more than once.
fn first_repeats(values: Vec<Value>) -> Vec<usize> {
    let mut out = Vec::new();
    for (i, v) in values.iter().enumerate() {
        let earlier = values[..i].iter().filter(|e| *e == v).count();
        if earlier == 1 {
            out.push(i);
        }
    }
    out
}
