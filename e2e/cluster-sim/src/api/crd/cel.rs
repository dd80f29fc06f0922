//! `x-kubernetes-validations`: CEL rules evaluated as the apiextensions-apiserver does, with
//! the `cel` crate: `self` is the value the rule sits on (at the root: `apiVersion`, `kind`,
//! `metadata.name`/`generateName` and the declared fields), `oldSelf` the value it replaces
//! on an update (transition rules run only when there is one, unless `optionalOldSelf`),
//! the error carries the rule's `message` (or `messageExpression`), `reason` and
//! `fieldPath`. Rules on values equal to their old selves are ratcheted (reported as
//! warnings, not errors), as on a real server.

use super::errors::{BadValue, ErrorType, FieldError};
use super::structural::Node;
use base64::Engine;
use cel::objects::{Key, Map as CelMap, OptionalValue};
use cel::{Context, Env, ExecutionError, Program, Value as Cel};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

/// The CEL environment rules compile and run in: the standard library with the strings
/// and lists extensions (Kubernetes' own libraries, e.g. `quantity()` or `url()`, are not
/// there).
fn env() -> Arc<Env> {
    static ENV: OnceLock<Arc<Env>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Env::stdlib();
        // Both extensions register fresh names: adding them cannot conflict.
        let _ = env.add_extension(cel::extensions::strings);
        let _ = env.add_extension(cel::extensions::lists);
        Arc::new(env)
    })
    .clone()
}

/// Compiles a CEL expression, or says why it does not compile.
pub fn compile(src: &str) -> Result<Program, String> {
    env().compile(src).map_err(|e| e.to_string())
}

/// One validation rule of a schema node.
#[derive(Debug)]
pub struct Rule {
    pub rule: String,
    pub message: String,
    pub message_expression: String,
    pub reason: Option<String>,
    pub field_path: String,
    pub optional_old_self: bool,
    pub program: Result<Program, String>,
    pub message_program: Option<Result<Program, String>>,
    pub uses_old_self: bool,
}

impl Rule {
    pub fn parse(v: &Value) -> Self {
        let s = |k: &str| v[k].as_str().unwrap_or("").to_string();
        let rule = s("rule");
        let program = compile(&rule);
        let uses_old_self = program
            .as_ref()
            .is_ok_and(|p| p.references().has_variable("oldSelf"));
        let message_expression = s("messageExpression");
        Rule {
            message: s("message"),
            message_program: (!message_expression.is_empty()).then(|| compile(&message_expression)),
            message_expression,
            reason: v["reason"].as_str().map(str::to_string),
            field_path: s("fieldPath"),
            optional_old_self: v["optionalOldSelf"].as_bool() == Some(true),
            program,
            uses_old_self,
            rule,
        }
    }

    /// `ruleErrorString`: the message if there is one, else the rule.
    fn error_string(&self) -> &str {
        if self.message.trim().is_empty() {
            self.rule.trim()
        } else {
            self.message.trim()
        }
    }
}

/// Rule failures and warnings (ratcheted failures) for a whole object.
#[derive(Default, Debug)]
pub struct Outcome {
    pub errors: Vec<FieldError>,
    pub warnings: Vec<String>,
}

/// Evaluates every rule of `root` and below against `obj` (and `old`, on updates).
pub fn validate(root: &Node, obj: &Value, old: Option<&Value>) -> Outcome {
    let mut out = Outcome::default();
    let ratchet = Ratchet {
        correlated: old.is_some(),
        equal: old == Some(obj),
    };
    walk(root, obj, old, None, ratchet, true, &mut out);
    out
}

/// Whether errors at a node are ratcheted: its value (or, when it cannot be matched with
/// an old value, its nearest matched ancestor's) equals the old one.
#[derive(Clone, Copy)]
struct Ratchet {
    correlated: bool,
    equal: bool,
}

impl Ratchet {
    fn child(self, old: Option<&Value>, new: &Value) -> Ratchet {
        match old {
            Some(o) => Ratchet {
                correlated: true,
                equal: o == new,
            },
            None if self.correlated => Ratchet {
                correlated: false,
                equal: false,
            },
            None => self,
        }
    }
}

fn walk(
    s: &Node,
    v: &Value,
    old: Option<&Value>,
    path: Option<&str>,
    ratchet: Ratchet,
    root: bool,
    out: &mut Outcome,
) {
    if v.is_null() {
        return; // only non-null values are validated
    }
    let old = old.filter(|o| !o.is_null());
    evaluate(s, v, old, path, ratchet, root, out);
    for a in &s.all_of {
        evaluate(a, v, old, path, ratchet, root, out);
    }
    let child_path = |sep: bool, k: &str| match (path, sep) {
        (None, true) => k.to_string(),
        (Some(p), true) => format!("{p}.{k}"),
        (None, false) => format!("[{k}]"),
        (Some(p), false) => format!("{p}[{k}]"),
    };
    match v {
        Value::Object(m) => {
            let old_map = old
                .and_then(Value::as_object)
                .filter(|_| s.map_correlatable());
            if let Some(a) = &s.additional {
                for (k, child) in m {
                    let oc = old_map.and_then(|o| o.get(k));
                    walk(
                        a,
                        child,
                        oc,
                        Some(&child_path(false, k)),
                        ratchet.child(oc, child),
                        false,
                        out,
                    );
                }
            }
            for (k, child) in m {
                if let Some(p) = s.properties.get(k) {
                    let oc = old_map.and_then(|o| o.get(k));
                    walk(
                        p,
                        child,
                        oc,
                        Some(&child_path(true, k)),
                        ratchet.child(oc, child),
                        false,
                        out,
                    );
                }
            }
        }
        Value::Array(items) => {
            if let Some(is) = &s.items {
                let old_items = old.and_then(Value::as_array);
                for (i, item) in items.iter().enumerate() {
                    let oi = old_items.and_then(|o| s.correlated_item(o, item));
                    let p = match path {
                        Some(p) => format!("{p}[{i}]"),
                        None => format!("[{i}]"),
                    };
                    walk(is, item, oi, Some(&p), ratchet.child(oi, item), false, out);
                }
            }
        }
        _ => {}
    }
}

fn evaluate(
    s: &Node,
    v: &Value,
    old: Option<&Value>,
    path: Option<&str>,
    ratchet: Ratchet,
    root: bool,
    out: &mut Outcome,
) {
    if s.rules.is_empty() {
        return;
    }
    let field = path.unwrap_or("<nil>").to_string();
    let ty = if s.ty.is_empty() { "" } else { s.ty.as_str() };
    let self_val = to_cel(v, s, root);
    let old_val = old.map(|o| to_cel(o, s, root));
    for rule in &s.rules {
        let program = match &rule.program {
            Ok(p) => p,
            Err(e) => {
                out.errors.push(FieldError::invalid(
                    field.clone(),
                    json!(ty),
                    format!("rule compile error: {e}"),
                ));
                continue;
            }
        };
        if rule.uses_old_self && old_val.is_none() && !rule.optional_old_self {
            continue; // transition rules need an old value
        }
        let mut ctx = Context::with_env(env());
        ctx.add_variable_from_value("self", self_val.clone());
        if rule.optional_old_self {
            let opt = match &old_val {
                Some(o) => OptionalValue::of(o.clone()),
                None => OptionalValue::none(),
            };
            ctx.add_variable_from_value("oldSelf", Cel::Opaque(Arc::new(opt)));
        } else if let Some(o) = &old_val {
            ctx.add_variable_from_value("oldSelf", o.clone());
        }
        match program.execute(&ctx) {
            Ok(Cel::Bool(true)) => continue,
            Ok(Cel::Bool(false)) => {}
            Ok(other) => {
                out.errors.push(FieldError::invalid(
                    field.clone(),
                    json!(ty),
                    format!(
                        "rule did not evaluate to a bool (got {}) evaluating rule: {}",
                        other.type_of(),
                        rule.error_string()
                    ),
                ));
                continue;
            }
            Err(e) => {
                let detail = match &e {
                    ExecutionError::NoSuchOverload(_) => format!(
                        "'{}': call arguments did not match a supported operator, function or macro signature for rule: {}",
                        go_error_text(&e),
                        rule.error_string()
                    ),
                    _ => format!("{} evaluating rule: {}", go_error_text(&e), rule.error_string()),
                };
                out.errors
                    .push(FieldError::invalid(field.clone(), json!(ty), detail));
                continue;
            }
        }
        // The rule failed: build the error the rule describes.
        let fld = match rule.field_path.trim_start_matches('.') {
            "" => field.clone(),
            fp => match path {
                Some(p) => format!("{p}.{fp}"),
                None => fp.to_string(),
            },
        };
        let detail = rule
            .message_program
            .as_ref()
            .and_then(|p| p.as_ref().ok())
            .and_then(|p| p.execute(&ctx).ok())
            .and_then(|m| match m {
                Cel::String(s) => {
                    let t = s.trim().to_string();
                    (!t.is_empty() && !t.contains('\n') && t.len() <= 5 * 1024).then_some(t)
                }
                _ => None,
            })
            .unwrap_or_else(|| {
                if rule.message.trim().is_empty() {
                    format!("failed rule: {}", rule.error_string())
                } else {
                    rule.message.trim().to_string()
                }
            });
        let bad = if matches!(ty, "object" | "array") {
            BadValue::Omit
        } else {
            BadValue::Value(v.clone())
        };
        let err = match rule.reason.as_deref() {
            Some("FieldValueForbidden") => FieldError::new(
                ErrorType::Forbidden,
                fld,
                BadValue::Value(json!("")),
                detail,
            ),
            Some("FieldValueRequired") => FieldError::required(fld, detail),
            Some("FieldValueDuplicate") => FieldError::new(ErrorType::Duplicate, fld, bad, ""),
            _ => FieldError::new(ErrorType::Invalid, fld, bad, detail),
        };
        if !rule.uses_old_self && ratchet.equal {
            out.warnings.push(err.message());
        } else {
            out.errors.push(err);
        }
    }
}

/// cel-go's wording for the evaluation errors rules commonly hit.
fn go_error_text(e: &ExecutionError) -> String {
    match e {
        ExecutionError::NoSuchKey(k) => format!("no such key: {k}"),
        ExecutionError::DivisionByZero(_) => "division by zero".to_string(),
        ExecutionError::RemainderByZero(_) => "modulus by zero".to_string(),
        ExecutionError::NoSuchOverload(_) => "no such overload".to_string(),
        other => other.to_string(),
    }
}

/// A JSON value as CEL sees it under schema `s`: only declared fields of objects (plus, at
/// a resource root or embedded resource, `apiVersion`, `kind` and `metadata.name` /
/// `generateName`), numbers of `type: number` as doubles, `date-time` strings as
/// timestamps, `byte` strings as bytes.
pub fn to_cel(v: &Value, s: &Node, root: bool) -> Cel {
    match v {
        Value::Null => Cel::Null,
        Value::Bool(b) => Cel::Bool(*b),
        Value::Number(n) => {
            if s.ty == "number" {
                Cel::Float(n.as_f64().unwrap_or(0.0))
            } else if let Some(i) = n.as_i64() {
                Cel::Int(i)
            } else {
                Cel::Float(n.as_f64().unwrap_or(0.0))
            }
        }
        Value::String(text) => match s.checked_format.as_str() {
            "date-time" => match chrono::DateTime::parse_from_rfc3339(text) {
                Ok(t) => Cel::Timestamp(t),
                Err(_) => Cel::String(Arc::new(text.clone())),
            },
            "byte" => match base64::engine::general_purpose::STANDARD.decode(text) {
                Ok(b) => Cel::Bytes(Arc::new(b)),
                Err(_) => Cel::String(Arc::new(text.clone())),
            },
            _ => Cel::String(Arc::new(text.clone())),
        },
        Value::Array(items) => {
            let any = Node::any();
            let is = s.items.as_deref().unwrap_or(&any);
            Cel::List(Arc::new(
                items.iter().map(|i| to_cel(i, is, false)).collect(),
            ))
        }
        Value::Object(m) => {
            let mut out: HashMap<Key, Cel> = HashMap::new();
            if root || s.embedded_resource {
                for k in ["apiVersion", "kind"] {
                    if let Some(Value::String(x)) = m.get(k) {
                        out.insert(
                            Key::String(Arc::new(k.into())),
                            Cel::String(Arc::new(x.clone())),
                        );
                    }
                }
                if let Some(meta) = m.get("metadata").and_then(Value::as_object) {
                    let mut mm: HashMap<Key, Cel> = HashMap::new();
                    for k in ["name", "generateName"] {
                        if let Some(Value::String(x)) = meta.get(k) {
                            mm.insert(
                                Key::String(Arc::new(k.into())),
                                Cel::String(Arc::new(x.clone())),
                            );
                        }
                    }
                    out.insert(
                        Key::String(Arc::new("metadata".into())),
                        Cel::Map(CelMap { map: Arc::new(mm) }),
                    );
                }
            }
            let any = Node::any();
            for (k, child) in m {
                if (root || s.embedded_resource)
                    && matches!(k.as_str(), "apiVersion" | "kind" | "metadata")
                {
                    continue;
                }
                let schema = match (s.properties.get(k), s.additional.as_deref()) {
                    (Some(p), _) => p,
                    (None, Some(a)) => a,
                    (None, None) if s.properties.is_empty() && s.preserve_unknown => &any,
                    _ => continue,
                };
                out.insert(
                    Key::String(Arc::new(k.clone())),
                    to_cel(child, schema, false),
                );
            }
            Cel::Map(CelMap { map: Arc::new(out) })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(rules: Value) -> Node {
        Node::parse(&json!({"type": "object",
        "x-kubernetes-validations": rules,
        "properties": {"spec": {"type": "object", "properties": {
            "min": {"type": "integer"}, "max": {"type": "integer"},
            "mode": {"type": "string", "x-kubernetes-validations": [
                {"rule": "self == oldSelf", "message": "mode is immutable"}
            ]},
        }}}}))
    }

    #[test]
    fn rules_see_self_and_report_message_reason_and_field_path() {
        let n = node(json!([
            {"rule": "self.metadata.name == 'cluster'", "message": "only one, named cluster", "reason": "FieldValueForbidden"},
            {"rule": "self.spec.min <= self.spec.max", "messageExpression": "'min ' + string(self.spec.min) + ' exceeds max ' + string(self.spec.max)", "fieldPath": ".spec.min"},
        ]));
        let obj = json!({"apiVersion": "x/v1", "kind": "K", "metadata": {"name": "other"}, "spec": {"min": 5, "max": 2}});
        let out = validate(&n, &obj, None);
        let msgs: Vec<String> = out.errors.iter().map(FieldError::message).collect();
        assert_eq!(
            msgs,
            [
                "<nil>: Forbidden: only one, named cluster",
                "spec.min: Invalid value: min 5 exceeds max 2"
            ]
        );
        assert_eq!(out.errors[0].kind.reason(), "FieldValueForbidden");
    }

    #[test]
    fn transition_rules_run_only_on_updates_and_unchanged_values_ratchet() {
        let n = node(json!([{"rule": "self.spec.max < 10"}]));
        let old = json!({"metadata": {"name": "a"}, "spec": {"mode": "A", "max": 20}});
        assert!(!validate(&n, &old, None).errors.is_empty());
        let changed = json!({"metadata": {"name": "a"}, "spec": {"mode": "B", "max": 20}});
        let out = validate(&n, &changed, Some(&old));
        let msgs: Vec<String> = out.errors.iter().map(FieldError::message).collect();
        assert!(
            msgs.contains(&"spec.mode: Invalid value: \"B\": mode is immutable".to_string()),
            "{msgs:?}"
        );
        // The root changed, so its rule is judged even though max did not change.
        assert!(
            msgs.iter()
                .any(|m| m.contains("failed rule: self.spec.max < 10")),
            "{msgs:?}"
        );
        // The same object again: nothing changed, the root rule only warns.
        let out = validate(&n, &old, Some(&old));
        assert!(out.errors.is_empty(), "{:?}", out.errors);
        assert_eq!(out.warnings.len(), 1);
    }

    #[test]
    fn evaluation_errors_read_as_cel_go_words() {
        let n = node(json!([{"rule": "self.spec.nope == 1"}]));
        let out = validate(&n, &json!({"metadata": {"name": "a"}, "spec": {}}), None);
        assert_eq!(
            out.errors[0].message(),
            "<nil>: Invalid value: \"object\": no such key: nope evaluating rule: self.spec.nope == 1"
        );
    }
}
