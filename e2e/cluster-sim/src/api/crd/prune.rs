//! What a real API server does to a custom resource before validating it: drops unknown
//! `metadata` fields, prunes fields the structural schema does not declare (unless
//! `x-kubernetes-preserve-unknown-fields`), removes `null`s the schema does not allow and
//! has no default for, and applies the schema's `default`s.

use super::structural::Node;
use serde_json::Value;

/// The fields of `ObjectMeta`: anything else in `metadata` is unknown and dropped.
const OBJECT_META_FIELDS: &[&str] = &[
    "name",
    "generateName",
    "namespace",
    "selfLink",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "labels",
    "annotations",
    "ownerReferences",
    "finalizers",
    "managedFields",
];

const TYPE_AND_OBJECT_META: &[&str] = &["apiVersion", "kind", "metadata"];

/// Drops unknown `metadata` fields and prunes unknown fields of a whole custom resource,
/// then removes non-nullable nulls that have no default. Returns the unknown fields' paths
/// (`metadata.x` first, then the pruned ones in sorted order), which strict field
/// validation reports.
pub fn coerce_and_prune(obj: &mut Value, root: &Node) -> Vec<String> {
    let mut unknown = Vec::new();
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        let extra: Vec<String> = meta
            .keys()
            .filter(|k| !OBJECT_META_FIELDS.contains(&k.as_str()))
            .cloned()
            .collect();
        for k in extra {
            meta.remove(&k);
            unknown.push(format!("metadata.{k}"));
        }
    }
    let mut pruned = Vec::new();
    prune(obj, Some(root), true, "", &mut pruned);
    pruned.sort();
    unknown.extend(pruned);
    prune_nulls(obj, Some(root));
    unknown
}

/// The fields of `obj` (a patch, an apply configuration) that `root` does not declare, as
/// server-side apply's typed conversion reports them (`.spec.x`), in sorted order;
/// `obj` is left as it is.
pub fn undeclared_fields(obj: &Value, root: &Node) -> Vec<String> {
    let mut copy = obj.clone();
    let mut out = Vec::new();
    if let Some(meta) = copy["metadata"].as_object() {
        for k in meta.keys() {
            if !OBJECT_META_FIELDS.contains(&k.as_str()) {
                out.push(format!(".metadata.{k}"));
            }
        }
    }
    let mut pruned = Vec::new();
    prune(&mut copy, Some(root), true, "", &mut pruned);
    pruned.sort();
    out.extend(pruned.into_iter().map(|p| format!(".{p}")));
    out
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// Removes from `x` what `s` does not declare; `embedded` keeps apiVersion/kind/metadata
/// (the resource root and `x-kubernetes-embedded-resource` objects).
fn prune(x: &mut Value, s: Option<&Node>, embedded: bool, path: &str, unknown: &mut Vec<String>) {
    let Some(s) = s else {
        match x {
            Value::Object(m) => {
                for k in m.keys() {
                    unknown.push(join(path, k));
                }
                m.clear();
            }
            Value::Array(items) => {
                for (i, v) in items.iter_mut().enumerate() {
                    prune(v, None, false, &format!("{path}[{i}]"), unknown);
                }
            }
            _ => {}
        }
        return;
    };
    let embedded = embedded || s.embedded_resource;
    if s.preserve_unknown {
        skip_prune(x, Some(s), embedded, path, unknown);
        return;
    }
    match x {
        Value::Object(m) => {
            let keys: Vec<String> = m.keys().cloned().collect();
            for k in keys {
                if embedded && TYPE_AND_OBJECT_META.contains(&k.as_str()) {
                    continue;
                }
                match s.properties.get(&k).or(s.additional.as_deref()) {
                    Some(child) => {
                        if let Some(v) = m.get_mut(&k) {
                            prune(v, Some(child), false, &join(path, &k), unknown);
                        }
                    }
                    None => {
                        // apiVersion/kind/metadata below the root are only allowed in
                        // embedded resources; at the root they are never reported.
                        if !(path.is_empty() && TYPE_AND_OBJECT_META.contains(&k.as_str())) {
                            unknown.push(join(path, &k));
                        }
                        m.remove(&k);
                    }
                }
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter_mut().enumerate() {
                prune(
                    v,
                    s.items.as_deref(),
                    false,
                    &format!("{path}[{i}]"),
                    unknown,
                );
            }
        }
        _ => {}
    }
}

/// Below `x-kubernetes-preserve-unknown-fields`: unknown fields stay, known ones are
/// pruned by their own schemas (`skipPrune`).
fn skip_prune(
    x: &mut Value,
    s: Option<&Node>,
    embedded: bool,
    path: &str,
    unknown: &mut Vec<String>,
) {
    let Some(s) = s else { return };
    match x {
        Value::Object(m) => {
            for (k, v) in m.iter_mut() {
                if embedded && TYPE_AND_OBJECT_META.contains(&k.as_str()) {
                    continue;
                }
                if let Some(child) = s.properties.get(k).or(s.additional.as_deref()) {
                    prune(v, Some(child), false, &join(path, k), unknown);
                }
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter_mut().enumerate() {
                let is = s.items.as_deref();
                let emb = is.is_some_and(|n| n.embedded_resource);
                skip_prune(v, is, emb, &format!("{path}[{i}]"), unknown);
            }
        }
        _ => {}
    }
}

/// Removes `null` map values whose schema is not nullable and has no default
/// (`PruneNonNullableNullsWithoutDefaults`).
fn prune_nulls(x: &mut Value, s: Option<&Node>) {
    match x {
        Value::Object(m) => {
            let drop: Vec<String> = m
                .iter()
                .filter(|(k, v)| {
                    let child = s.and_then(|s| s.child(k));
                    v.is_null() && child.is_some_and(|c| !c.nullable && c.default.is_none())
                })
                .map(|(k, _)| k.clone())
                .collect();
            for k in drop {
                m.remove(&k);
            }
            for (k, v) in m.iter_mut() {
                prune_nulls(v, s.and_then(|s| s.child(k)));
            }
        }
        Value::Array(items) => {
            for v in items {
                prune_nulls(v, s.and_then(|s| s.items.as_deref()));
            }
        }
        _ => {}
    }
}

/// Applies the schema's defaults (`structuraldefaulting.Default`): a missing property, or
/// a non-nullable `null` one, gets its default; recursively through objects, maps and
/// list items.
pub fn default(x: &mut Value, s: &Node) {
    let non_nullable_null = |v: &Value, c: &Node| v.is_null() && !c.nullable;
    match x {
        Value::Object(m) => {
            for (k, prop) in &s.properties {
                let Some(d) = &prop.default else { continue };
                if m.get(k).is_none_or(|v| non_nullable_null(v, prop)) {
                    m.insert(k.clone(), d.clone());
                }
            }
            for (k, v) in m.iter_mut() {
                if let Some(prop) = s.properties.get(k) {
                    default(v, prop);
                } else if let Some(a) = &s.additional {
                    if let Some(d) = a.default.as_ref().filter(|_| non_nullable_null(v, a)) {
                        *v = d.clone();
                    }
                    default(v, a);
                }
            }
        }
        Value::Array(items) => {
            if let Some(is) = &s.items {
                for v in items {
                    if let Some(d) = is.default.as_ref().filter(|_| non_nullable_null(v, is)) {
                        *v = d.clone();
                    }
                    default(v, is);
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Node {
        Node::parse(&json!({"type": "object", "properties": {
            "spec": {"type": "object", "properties": {
                "a": {"type": "string", "default": "x"},
                "n": {"type": "string"},
                "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                "list": {"type": "array", "items": {"type": "object", "properties": {"k": {"type": "string"}}}},
                "m": {"type": "object", "additionalProperties": {"type": "integer"}},
            }},
        }}))
    }

    #[test]
    fn unknown_fields_are_pruned_and_reported_in_order() {
        let mut obj = json!({"apiVersion": "x/v1", "kind": "K", "metadata": {"name": "n", "bogus": 1},
            "spec": {"zz": 1, "free": {"anything": {"goes": true}}, "list": [{"k": "v", "j": 2}], "m": {"a": 1}, "n": null},
            "extra": true});
        let unknown = coerce_and_prune(&mut obj, &schema());
        assert_eq!(
            unknown,
            ["metadata.bogus", "extra", "spec.list[0].j", "spec.zz"]
        );
        assert_eq!(obj["spec"]["free"]["anything"]["goes"], true);
        assert!(
            obj["spec"].get("n").is_none(),
            "non-nullable null without default"
        );
        assert_eq!(obj["apiVersion"], "x/v1");
        default(&mut obj, &schema());
        assert_eq!(obj["spec"]["a"], "x");
    }

    #[test]
    fn apply_configurations_name_undeclared_fields_with_a_leading_dot() {
        let obj = json!({"apiVersion": "x/v1", "kind": "K", "metadata": {"name": "n"}, "spec": {"zz": 1}});
        assert_eq!(undeclared_fields(&obj, &schema()), [".spec.zz"]);
    }
}
