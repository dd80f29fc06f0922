//! Custom resources validated as a real API server validates them: structural-schema
//! pruning and defaulting, OpenAPI validation with ratcheting, list-type invariants,
//! `x-kubernetes-validations` CEL rules, field validation directives (`Strict`, `Warn`,
//! `Ignore`), and the warnings a server sends (unknown fields, unrecognized formats in a
//! CRD, finalizer names).

pub mod cel;
pub mod errors;
pub mod formats;
pub mod prune;
pub mod structural;
pub mod validate;

use crate::store::{crd_key, ResourceKey, ResourceType, Store};
use errors::{ErrorType, FieldError};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use structural::Node;

/// A served custom resource type's schema, compiled.
#[derive(Debug)]
pub struct CrdSchema {
    pub root: Node,
    /// Whether any `x-kubernetes-validations` rule exists (a real server has no CEL
    /// validator otherwise, and so adds no "rules were not checked" error).
    pub has_rules: bool,
    pub kind: String,
    pub group: String,
    pub version: String,
}

/// What the request asked for unknown fields (`fieldValidation`; `Warn` when unset, as on
/// a real server).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldValidation {
    Ignore,
    Warn,
    Strict,
}

impl FieldValidation {
    /// The directive in `value`, or the field error a real server answers for another.
    pub fn parse(value: Option<&str>) -> Result<Self, FieldError> {
        match value.unwrap_or("") {
            "" | "Warn" => Ok(Self::Warn),
            "Strict" => Ok(Self::Strict),
            "Ignore" => Ok(Self::Ignore),
            other => Err(FieldError::new(
                ErrorType::NotSupported,
                "fieldValidation",
                errors::BadValue::Value(json!(other)),
                "supported values: \"Ignore\", \"Strict\", \"Warn\"",
            )),
        }
    }
}

/// Which write a validation is for.
#[derive(Clone, Copy, Debug)]
pub enum Write<'a> {
    Create,
    Update { old: &'a Value },
    Status { old: &'a Value },
}

impl CrdSchema {
    /// Drops unknown metadata fields and prunes undeclared ones; returns their paths.
    pub fn coerce(&self, obj: &mut Value) -> Vec<String> {
        prune::coerce_and_prune(obj, &self.root)
    }

    /// The fields of an apply configuration that the schema does not declare.
    pub fn undeclared(&self, obj: &Value) -> Vec<String> {
        prune::undeclared_fields(obj, &self.root)
    }

    /// Applies the schema's defaults.
    pub fn default(&self, obj: &mut Value) {
        prune::default(obj, &self.root);
    }

    /// Validates the object a write would store: errors (the 422's causes) and warnings.
    pub fn validate(&self, obj: &Value, write: Write<'_>) -> (Vec<FieldError>, Vec<String>) {
        let mut errs = Vec::new();
        let old = match write {
            Write::Create => None,
            Write::Update { old } | Write::Status { old } => Some(old),
        };
        match write {
            Write::Create | Write::Update { .. } => {
                errs.extend(validate::validate(&self.root, obj, old, None));
            }
            Write::Status { old } => {
                if let (Some(status), Some(schema)) =
                    (obj.get("status"), self.root.properties.get("status"))
                {
                    errs.extend(validate::validate(
                        schema,
                        status,
                        old.get("status"),
                        Some("status"),
                    ));
                }
            }
        }
        // List invariants are ratcheted as a whole: an old object that already broke them
        // may still be written.
        let old_list_ok =
            old.is_none_or(|o| validate::list_sets_and_maps(&self.root, o, "").is_empty());
        if old_list_ok {
            errs.extend(validate::list_sets_and_maps(&self.root, obj, ""));
        }
        let mut warnings = Vec::new();
        if self.has_rules {
            if errs.iter().any(FieldError::blocks_rules) {
                errs.push(errors::rules_not_checked());
            } else {
                let out = cel::validate(&self.root, obj, old);
                errs.extend(out.errors);
                warnings.extend(out.warnings);
            }
        }
        warnings.extend(finalizer_warnings(obj, old));
        (errs, warnings)
    }

    /// The 422 for `errs` on the object `name`.
    pub fn invalid(&self, name: &str, errs: &[FieldError]) -> crate::api::status::ApiError {
        errors::invalid_status(&self.kind, &self.group, name, errs)
    }
}

/// Warnings for finalizers added by this write whose names are not domain-qualified.
fn finalizer_warnings(obj: &Value, old: Option<&Value>) -> Vec<String> {
    let names = |v: &Value| -> Vec<String> {
        v["metadata"]["finalizers"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|f| f.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let before = old.map(names).unwrap_or_default();
    let mut added: Vec<String> = names(obj)
        .into_iter()
        .filter(|f| !before.contains(f))
        .collect();
    added.sort();
    added.dedup();
    let standard = ["orphan", "foregroundDeletion", "kubernetes"];
    added
        .into_iter()
        .filter(|f| !f.contains('/') && !standard.contains(&f.as_str()))
        .map(|f| {
            let why = if f.contains('.') {
                "prefer a domain-qualified finalizer name including a path (/) to avoid accidental conflicts with other finalizer writers"
            } else {
                "prefer a domain-qualified finalizer name to avoid accidental conflicts with other finalizer writers"
            };
            format!("metadata.finalizers: {}: {why}", errors::go_quote(&f))
        })
        .collect()
}

/// Compiled schemas of the served custom resource types, rebuilt when their CRD changes.
#[derive(Default)]
pub struct SchemaCache {
    inner: Mutex<HashMap<ResourceKey, (String, Arc<CrdSchema>)>>,
}

impl SchemaCache {
    /// The schema of custom resource type `t` (None for built-in kinds and CRDs without a
    /// schema). Reads the store: never call it inside `Store::mutate`.
    pub fn get(&self, store: &Store, t: &ResourceType) -> Option<Arc<CrdSchema>> {
        if crate::api::builtin::is_builtin(&t.key) {
            return None;
        }
        let crd = store.get(
            &crd_key(),
            None,
            &format!("{}.{}", t.key.plural, t.key.group),
        )?;
        let rv = crd["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let mut cache = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((cached_rv, s)) = cache.get(&t.key) {
            if *cached_rv == rv && s.version == t.version {
                return Some(s.clone());
            }
        }
        let version = crd["spec"]["versions"]
            .as_array()?
            .iter()
            .find(|v| v["name"].as_str() == Some(t.version.as_str()))?;
        let schema = &version["schema"]["openAPIV3Schema"];
        if !schema.is_object() {
            return None;
        }
        let root = Node::parse(schema);
        let mut has_rules = false;
        root.walk(&mut |n| has_rules |= !n.rules.is_empty());
        let compiled = Arc::new(CrdSchema {
            has_rules,
            root,
            kind: t.kind.clone(),
            group: t.key.group.clone(),
            version: t.version.clone(),
        });
        cache.insert(t.key.clone(), (rv, compiled.clone()));
        Some(compiled)
    }
}

/// What a real server checks of the CEL in a CustomResourceDefinition it is given: every
/// rule and message expression must compile. Returns the field errors.
pub fn crd_rule_errors(crd: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    for (i, v) in crd["spec"]["versions"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let path = format!("spec.versions[{i}].schema.openAPIV3Schema");
        rule_errors(&v["schema"]["openAPIV3Schema"], &path, &mut errs);
    }
    errs
}

fn rule_errors(s: &Value, path: &str, errs: &mut Vec<FieldError>) {
    if !s.is_object() {
        return;
    }
    for (j, r) in s["x-kubernetes-validations"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let rule = r["rule"].as_str().unwrap_or("");
        if rule.trim().is_empty() {
            errs.push(FieldError::required(
                format!("{path}.x-kubernetes-validations[{j}].rule"),
                "",
            ));
        } else if let Err(e) = cel::compile(rule) {
            errs.push(FieldError::invalid(
                format!("{path}.x-kubernetes-validations[{j}].rule"),
                r.clone(),
                format!("compilation failed: {e}"),
            ));
        }
        if let Some(me) = r["messageExpression"]
            .as_str()
            .filter(|m| !m.trim().is_empty())
        {
            if let Err(e) = cel::compile(me) {
                errs.push(FieldError::invalid(
                    format!("{path}.x-kubernetes-validations[{j}].messageExpression"),
                    json!(me),
                    format!("messageExpression compilation failed: {e}"),
                ));
            }
        }
    }
    for (k, child) in s["properties"].as_object().into_iter().flatten() {
        rule_errors(child, &format!("{path}.properties[{k}]"), errs);
    }
    rule_errors(&s["items"], &format!("{path}.items"), errs);
    rule_errors(
        &s["additionalProperties"],
        &format!("{path}.additionalProperties"),
        errs,
    );
    for k in ["allOf", "anyOf", "oneOf"] {
        for (j, c) in s[k].as_array().into_iter().flatten().enumerate() {
            rule_errors(c, &format!("{path}.{k}[{j}]"), errs);
        }
    }
}
