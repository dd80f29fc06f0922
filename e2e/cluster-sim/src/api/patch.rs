//! Patches (JSON merge, JSON patch, strategic merge) and field management: `managedFields`
//! bookkeeping on every write and server-side apply with conflicts.
//!
//! Field ownership is tracked per leaf: a scalar, an empty map, or a whole atomic list. Lists
//! that strategic merge merges by key (containers, env, volumes, ports, conditions...) are
//! maps of their items here too (`k:{"name":"app"}`), as on a real server. A manager owns a
//! leaf when it applied it or was the last to change it with an update. An apply conflicts
//! when it sets a leaf (or a parent or child of one) that another manager owns to a
//! different value.

use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet};

pub type Path = Vec<String>;

/// Fields the server owns: never tracked, never changed by an apply.
fn ignored(path: &[String], subresource: Option<&str>) -> bool {
    match path.first().map(String::as_str) {
        Some("apiVersion") | Some("kind") => true,
        Some("metadata") => {
            matches!(
                path.get(1).map(String::as_str),
                Some(
                    "name"
                        | "namespace"
                        | "uid"
                        | "resourceVersion"
                        | "generation"
                        | "creationTimestamp"
                        | "managedFields"
                        | "deletionTimestamp"
                        | "deletionGracePeriodSeconds"
                        | "selfLink"
                ) | None
            ) && path.len() <= 2
        }
        Some("status") => subresource != Some("status"),
        _ => subresource == Some("status"),
    }
}

/// Every leaf path of `v` (objects are recursed into; scalars, lists and empty objects are
/// leaves).
pub fn leaves(v: &Value, subresource: Option<&str>) -> BTreeSet<Path> {
    fn walk(v: &Value, path: &mut Path, out: &mut BTreeSet<Path>, sub: Option<&str>) {
        match v {
            Value::Object(m) if !m.is_empty() => {
                for (k, child) in m {
                    path.push(k.clone());
                    if !ignored(path, sub) || (path.len() == 1 && k == "metadata") {
                        walk(child, path, out, sub);
                    }
                    path.pop();
                }
            }
            Value::Array(items) if !items.is_empty() => {
                match path.last().and_then(|field| keyed_items(field, items)) {
                    // A list merged by key: each item is a map keyed `k:{"name":"x"}`.
                    Some(segments) => {
                        for (seg, item) in segments.into_iter().zip(items) {
                            path.push(seg);
                            walk(item, path, out, sub);
                            path.pop();
                        }
                    }
                    None => {
                        if !ignored(path, sub) {
                            out.insert(path.clone());
                        }
                    }
                }
            }
            _ => {
                if !path.is_empty() && !ignored(path, sub) {
                    out.insert(path.clone());
                }
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(v, &mut Vec::new(), &mut out, subresource);
    out
}

/// The `k:{...}` segments of a list's items when the field merges by key and every item has
/// a distinct key; None for atomic lists.
fn keyed_items(field: &str, items: &[Value]) -> Option<Vec<String>> {
    let key = merge_key(field, items.first())?;
    let mut segs = Vec::with_capacity(items.len());
    for item in items {
        let id = item.as_object()?.get(key)?;
        let seg = format!("k:{}", json!({ key: id }));
        if segs.contains(&seg) {
            return None;
        }
        segs.push(seg);
    }
    Some(segs)
}

/// Parses a `k:{"name":"x"}` segment into its key and value.
fn item_key(seg: &str) -> Option<(String, Value)> {
    let obj: serde_json::Map<String, Value> = serde_json::from_str(seg.strip_prefix("k:")?).ok()?;
    let mut it = obj.into_iter();
    let first = it.next()?;
    it.next().is_none().then_some(first)
}

fn child<'a>(cur: &'a Value, seg: &str) -> Option<&'a Value> {
    match cur {
        Value::Object(m) => m.get(seg),
        Value::Array(items) => {
            let (k, v) = item_key(seg)?;
            items.iter().find(|i| i.get(&k) == Some(&v))
        }
        _ => None,
    }
}

pub fn value_at<'a>(v: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut cur = v;
    for seg in path {
        cur = child(cur, seg)?;
    }
    Some(cur)
}

fn set_at(v: &mut Value, path: &[String], value: Value) {
    let Some((first, rest)) = path.split_first() else {
        *v = value;
        return;
    };
    if let Some((k, id)) = item_key(first) {
        if !v.is_array() {
            *v = json!([]);
        }
        let Some(items) = v.as_array_mut() else {
            return;
        };
        let pos = match items.iter().position(|i| i.get(&k) == Some(&id)) {
            Some(p) => p,
            None => {
                items.push(json!({ k: id }));
                items.len() - 1
            }
        };
        set_at(&mut items[pos], rest, value);
        return;
    }
    if !v.is_object() {
        *v = json!({});
    }
    let Some(m) = v.as_object_mut() else { return };
    if rest.is_empty() {
        m.insert(first.clone(), value);
    } else {
        let next = m.entry(first.clone()).or_insert(Value::Null);
        set_at(next, rest, value);
    }
}

/// Removes the leaf at `path` and any parent object, list item or list it leaves empty.
fn remove_at(v: &mut Value, path: &[String]) {
    fn rec(v: &mut Value, path: &[String]) -> bool {
        let Some((first, rest)) = path.split_first() else {
            return false;
        };
        if let (Some((k, id)), Some(items)) = (item_key(first), v.as_array_mut()) {
            if let Some(pos) = items.iter().position(|i| i.get(&k) == Some(&id)) {
                if rest.is_empty() || rec(&mut items[pos], rest) {
                    items.remove(pos);
                }
            }
            return items.is_empty();
        }
        let Some(m) = v.as_object_mut() else {
            return false;
        };
        if rest.is_empty() || m.get_mut(first).is_some_and(|child| rec(child, rest)) {
            m.remove(first);
        }
        m.is_empty()
    }
    rec(v, path);
}

/// A managedFields entry, decoded.
#[derive(Debug, Clone)]
pub struct Managed {
    pub manager: String,
    pub operation: String,
    pub subresource: Option<String>,
    pub api_version: String,
    pub time: String,
    pub fields: BTreeSet<Path>,
}

fn to_fields_v1(paths: &BTreeSet<Path>) -> Value {
    let mut root = Map::new();
    for p in paths {
        let mut cur = &mut root;
        for (i, seg) in p.iter().enumerate() {
            let name = if seg.starts_with("k:") {
                seg.clone()
            } else {
                format!("f:{seg}")
            };
            let entry = cur.entry(name).or_insert_with(|| json!({}));
            let Some(m) = entry.as_object_mut() else {
                break;
            };
            if i + 1 < p.len() {
                m.entry(".".to_string()).or_insert_with(|| json!({}));
            }
            cur = m;
        }
    }
    Value::Object(root)
}

fn from_fields_v1(v: &Value) -> BTreeSet<Path> {
    fn walk(v: &Value, path: &mut Path, out: &mut BTreeSet<Path>) {
        let children: Vec<(&String, &Value)> = v
            .as_object()
            .map(|m| m.iter().filter(|(k, _)| k.as_str() != ".").collect())
            .unwrap_or_default();
        let named: Vec<_> = children
            .iter()
            .filter(|(k, _)| k.starts_with("f:") || k.starts_with("k:"))
            .collect();
        if named.is_empty() || named.len() != children.len() {
            // A leaf, or a set or indexed list (v:/i:), which this server treats as atomic.
            if !path.is_empty() {
                out.insert(path.clone());
            }
            return;
        }
        for (k, child) in named {
            path.push(if k.starts_with("k:") {
                k.to_string()
            } else {
                k[2..].to_string()
            });
            walk(child, path, out);
            path.pop();
        }
    }
    let mut out = BTreeSet::new();
    walk(v, &mut Vec::new(), &mut out);
    out
}

pub fn read_managed(obj: &Value) -> Vec<Managed> {
    obj["metadata"]["managedFields"]
        .as_array()
        .map(|entries| {
            entries
                .iter()
                .map(|e| Managed {
                    manager: e["manager"].as_str().unwrap_or("").to_string(),
                    operation: e["operation"].as_str().unwrap_or("Update").to_string(),
                    subresource: e["subresource"].as_str().map(str::to_string),
                    api_version: e["apiVersion"].as_str().unwrap_or("").to_string(),
                    time: e["time"].as_str().unwrap_or("").to_string(),
                    fields: from_fields_v1(&e["fieldsV1"]),
                })
                .collect()
        })
        .unwrap_or_default()
}

pub fn write_managed(obj: &mut Value, managed: &[Managed]) {
    let entries: Vec<Value> = managed
        .iter()
        .filter(|m| !m.fields.is_empty())
        .map(|m| {
            let mut e = json!({
                "manager": m.manager,
                "operation": m.operation,
                "apiVersion": m.api_version,
                "time": m.time,
                "fieldsType": "FieldsV1",
                "fieldsV1": to_fields_v1(&m.fields),
            });
            if let Some(s) = &m.subresource {
                e["subresource"] = json!(s);
            }
            e
        })
        .collect();
    if let Some(meta) = obj["metadata"].as_object_mut() {
        if entries.is_empty() {
            meta.remove("managedFields");
        } else {
            meta.insert("managedFields".to_string(), Value::Array(entries));
        }
    }
}

fn is_empty_map(v: Option<&Value>) -> bool {
    v.and_then(Value::as_object).is_some_and(|m| m.is_empty())
}

fn related(a: &[String], b: &[String]) -> bool {
    a.starts_with(b) || b.starts_with(a)
}

pub fn now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// Records an update (create, PUT, non-apply PATCH) by `manager`: the leaves that changed
/// between `old` and `new` now belong to it, and to no other manager.
pub fn track_update(
    old: Option<&Value>,
    new: &mut Value,
    manager: &str,
    subresource: Option<&str>,
) {
    let mut managed = old.map(read_managed).unwrap_or_default();
    let new_leaves = leaves(new, subresource);
    let changed: BTreeSet<Path> = match old {
        Some(old) => {
            let old_leaves = leaves(old, subresource);
            let mut c: BTreeSet<Path> = new_leaves
                .iter()
                .filter(|p| value_at(old, p) != value_at(new, p))
                .cloned()
                .collect();
            // Removed leaves are owned by nobody any more.
            for gone in old_leaves.difference(&new_leaves) {
                for m in &mut managed {
                    m.fields.remove(gone);
                }
            }
            c.retain(|p| !p.is_empty());
            c
        }
        None => new_leaves.clone(),
    };
    // Leaves that are now absent from the object drop out of every set.
    for m in &mut managed {
        m.fields.retain(|p| value_at(new, p).is_some());
    }
    if !changed.is_empty() {
        for m in &mut managed {
            m.fields.retain(|p| !changed.iter().any(|c| related(c, p)));
        }
        let api_version = new["apiVersion"].as_str().unwrap_or("").to_string();
        let sub = subresource.map(str::to_string);
        match managed
            .iter_mut()
            .find(|m| m.manager == manager && m.operation == "Update" && m.subresource == sub)
        {
            Some(m) => {
                m.fields.extend(changed);
                m.time = now();
            }
            None => managed.push(Managed {
                manager: manager.to_string(),
                operation: "Update".to_string(),
                subresource: sub,
                api_version,
                time: now(),
                fields: changed,
            }),
        }
    }
    write_managed(new, &managed);
}

/// A field-manager conflict of a server-side apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    pub manager: String,
    pub field: String,
}

/// A field path as a real server prints it in conflicts: `.spec.containers[name="app"].image`.
pub fn field_string(p: &[String]) -> String {
    p.iter()
        .map(|s| match item_key(s) {
            Some((k, v)) => format!("[{k}={v}]"),
            None => format!(".{s}"),
        })
        .collect()
}

/// Server-side apply of `applied` by `manager` onto `current` (None: the object is new).
/// Returns the new object, or the conflicts when `force` is false.
pub fn apply(
    current: Option<&Value>,
    applied: &Value,
    manager: &str,
    force: bool,
    subresource: Option<&str>,
) -> Result<Value, Vec<Conflict>> {
    let mut managed = current.map(read_managed).unwrap_or_default();
    let applied_leaves = leaves(applied, subresource);
    let empty = json!({});
    let base = current.unwrap_or(&empty);
    let sub = subresource.map(str::to_string);
    let mut conflicts = BTreeMap::new();
    for m in managed
        .iter()
        .filter(|m| !(m.manager == manager && m.operation == "Apply"))
    {
        if m.subresource != sub && !(m.subresource.is_none() && sub.is_none()) {
            continue;
        }
        for owned in &m.fields {
            for p in applied_leaves.iter().filter(|p| related(p, owned)) {
                // An empty map applied above someone's fields is a container, not a value.
                if p.len() < owned.len() && is_empty_map(value_at(applied, p)) {
                    continue;
                }
                let differs = value_at(base, p) != value_at(applied, p)
                    || (owned.len() > p.len() && value_at(base, owned) != value_at(applied, owned));
                if differs {
                    conflicts.insert((m.manager.clone(), field_string(owned)), ());
                }
            }
        }
    }
    if !conflicts.is_empty() && !force {
        return Err(conflicts
            .into_keys()
            .map(|(manager, field)| Conflict { manager, field })
            .collect());
    }
    let mut next = base.clone();
    if !next["metadata"].is_object() {
        next["metadata"] = json!({});
    }
    if current.is_none() {
        for f in ["apiVersion", "kind"] {
            if let Some(v) = applied.get(f) {
                next[f] = v.clone();
            }
        }
        for f in ["name", "namespace", "generateName"] {
            if let Some(v) = applied["metadata"].get(f) {
                next["metadata"][f] = v.clone();
            }
        }
    }
    // Leaves this manager applied before and no longer applies, and nobody else owns, go.
    let previous: BTreeSet<Path> = managed
        .iter()
        .filter(|m| m.manager == manager && m.operation == "Apply" && m.subresource == sub)
        .flat_map(|m| m.fields.iter().cloned())
        .collect();
    for p in previous.difference(&applied_leaves) {
        let owned_by_other = managed
            .iter()
            .filter(|m| !(m.manager == manager && m.operation == "Apply"))
            .any(|m| m.fields.iter().any(|o| related(o, p)));
        if !owned_by_other {
            remove_at(&mut next, p);
        }
    }
    for p in &applied_leaves {
        if let Some(v) = value_at(applied, p) {
            if is_empty_map(Some(v)) && value_at(&next, p).is_some_and(Value::is_object) {
                continue; // merges into what is there
            }
            set_at(&mut next, p, v.clone());
        }
    }
    if force {
        for m in managed
            .iter_mut()
            .filter(|m| !(m.manager == manager && m.operation == "Apply"))
        {
            m.fields.retain(|o| {
                !applied_leaves
                    .iter()
                    .any(|p| related(p, o) && (value_at(base, o) != value_at(&next, o)))
            });
        }
    }
    managed.retain(|m| !(m.manager == manager && m.operation == "Apply" && m.subresource == sub));
    managed.push(Managed {
        manager: manager.to_string(),
        operation: "Apply".to_string(),
        subresource: sub,
        api_version: applied["apiVersion"].as_str().unwrap_or("").to_string(),
        time: now(),
        fields: applied_leaves,
    });
    for m in &mut managed {
        m.fields.retain(|p| value_at(&next, p).is_some());
    }
    write_managed(&mut next, &managed);
    Ok(next)
}

/// The merge key of a list field for strategic merge patch, by field name (and, for `ports`,
/// by the shape of its items).
fn merge_key(field: &str, sample: Option<&Value>) -> Option<&'static str> {
    match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "volumeMounts"
        | "imagePullSecrets"
        | "volumeDevices" => Some("name"),
        "conditions" => Some("type"),
        "ownerReferences" => Some("uid"),
        "ports" => Some(
            if sample.is_some_and(|s| s.get("containerPort").is_some()) {
                "containerPort"
            } else {
                "port"
            },
        ),
        "hostAliases" => Some("ip"),
        "topologySpreadConstraints" => Some("topologyKey"),
        _ => None,
    }
}

/// Strategic merge patch for built-in kinds: like a JSON merge patch, but lists with a merge
/// key merge item by item (`$patch: delete` removes one), `finalizers` merge as a set, and
/// `$patch: replace` replaces a map. Other directives (`$setElementOrder`, `$retainKeys`) are
/// accepted and ignored.
pub fn strategic_merge(target: &mut Value, patch: &Value) -> Result<(), String> {
    let Some(pm) = patch.as_object() else {
        *target = patch.clone();
        return Ok(());
    };
    if pm.get("$patch").and_then(Value::as_str) == Some("replace") {
        let mut p = patch.clone();
        if let Some(m) = p.as_object_mut() {
            m.remove("$patch");
        }
        *target = p;
        return Ok(());
    }
    if pm.get("$patch").and_then(Value::as_str) == Some("delete") {
        *target = json!({});
        return Ok(());
    }
    if !target.is_object() {
        *target = json!({});
    }
    let Some(tm) = target.as_object_mut() else {
        return Ok(());
    };
    for (k, pv) in pm {
        if k.starts_with('$')
            || k.starts_with("$setElementOrder/")
            || k.starts_with("$deleteFromPrimitiveList/")
        {
            if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
                if let (Some(list), Some(del)) = (
                    tm.get_mut(field).and_then(Value::as_array_mut),
                    pv.as_array(),
                ) {
                    list.retain(|x| !del.contains(x));
                }
            }
            continue;
        }
        if pv.is_null() {
            tm.remove(k);
            continue;
        }
        match pv {
            Value::Object(_) => strategic_merge(tm.entry(k.clone()).or_insert(Value::Null), pv)?,
            Value::Array(items) => {
                if k == "finalizers" {
                    let list = tm.entry(k.clone()).or_insert_with(|| json!([]));
                    if let Some(l) = list.as_array_mut() {
                        for it in items {
                            if !l.contains(it) {
                                l.push(it.clone());
                            }
                        }
                    }
                    continue;
                }
                match merge_key(k, items.first()) {
                    Some(key) if items.iter().all(Value::is_object) => {
                        let existing = tm.entry(k.clone()).or_insert_with(|| json!([]));
                        if !existing.is_array() {
                            *existing = json!([]);
                        }
                        let Some(list) = existing.as_array_mut() else {
                            continue;
                        };
                        for item in items {
                            let id = item.get(key).cloned().ok_or_else(|| {
                                format!("map: {item} does not contain declared merge key: {key}")
                            })?;
                            let pos = list.iter().position(|x| x.get(key) == Some(&id));
                            let delete =
                                item.get("$patch").and_then(Value::as_str) == Some("delete");
                            match (pos, delete) {
                                (Some(i), true) => {
                                    list.remove(i);
                                }
                                (None, true) => {}
                                (Some(i), false) => strategic_merge(&mut list[i], item)?,
                                (None, false) => {
                                    let mut fresh = Value::Null;
                                    strategic_merge(&mut fresh, item)?;
                                    list.push(fresh);
                                }
                            }
                        }
                    }
                    _ => {
                        tm.insert(k.clone(), pv.clone());
                    }
                }
            }
            _ => {
                tm.insert(k.clone(), pv.clone());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strategic_merge_merges_containers_by_name_and_env_by_name() {
        let mut pod = json!({"spec": {"containers": [
            {"name": "app", "image": "a:1", "env": [{"name": "X", "value": "1"}]},
            {"name": "sidecar", "image": "s:1"}
        ]}});
        let patch = json!({"spec": {"containers": [
            {"name": "app", "env": [{"name": "Y", "value": "2"}]},
            {"name": "sidecar", "$patch": "delete"}
        ]}});
        strategic_merge(&mut pod, &patch).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            pod,
            json!({"spec": {"containers": [
                {"name": "app", "image": "a:1", "env": [{"name": "X", "value": "1"}, {"name": "Y", "value": "2"}]}
            ]}})
        );
    }

    #[test]
    fn apply_conflicts_only_on_differing_values_and_force_takes_ownership() {
        let created = apply(None, &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"k": "1"}}), "a", false, None)
            .unwrap_or_else(|c| panic!("{c:?}"));
        // Same value from another manager: shared, no conflict.
        let shared = apply(
            Some(&created),
            &json!({"metadata": {"name": "c"}, "data": {"k": "1"}}),
            "b",
            false,
            None,
        );
        assert!(shared.is_ok());
        let conflict = apply(
            Some(&created),
            &json!({"metadata": {"name": "c"}, "data": {"k": "2"}}),
            "b",
            false,
            None,
        );
        assert_eq!(
            conflict.err(),
            Some(vec![Conflict {
                manager: "a".into(),
                field: ".data.k".into()
            }])
        );
        let forced = apply(
            Some(&created),
            &json!({"metadata": {"name": "c"}, "data": {"k": "2"}}),
            "b",
            true,
            None,
        )
        .unwrap_or_else(|c| panic!("{c:?}"));
        assert_eq!(forced["data"]["k"], "2");
        let owners: Vec<String> = read_managed(&forced)
            .into_iter()
            .filter(|m| {
                m.fields
                    .contains(&vec!["data".to_string(), "k".to_string()])
            })
            .map(|m| m.manager)
            .collect();
        assert_eq!(owners, vec!["b".to_string()]);
    }

    #[test]
    fn apply_removes_fields_the_manager_stopped_applying() {
        let v1 = apply(
            None,
            &json!({"metadata": {"name": "c"}, "data": {"a": "1", "b": "2"}}),
            "m",
            false,
            None,
        )
        .unwrap_or_else(|c| panic!("{c:?}"));
        let v2 = apply(
            Some(&v1),
            &json!({"metadata": {"name": "c"}, "data": {"a": "1"}}),
            "m",
            false,
            None,
        )
        .unwrap_or_else(|c| panic!("{c:?}"));
        assert_eq!(v2["data"], json!({"a": "1"}));
    }

    #[test]
    fn keyed_lists_are_owned_item_by_item() {
        let base = json!({"metadata": {"name": "d"}, "spec": {"containers": [{"name": "app", "image": "a:1"}]}});
        let v1 = apply(None, &base, "m1", false, None).unwrap_or_else(|c| panic!("{c:?}"));
        // A second manager adds its own container: no conflict, both kept.
        let side = json!({"metadata": {"name": "d"}, "spec": {"containers": [{"name": "side", "image": "s:1"}]}});
        let v2 = apply(Some(&v1), &side, "m2", false, None).unwrap_or_else(|c| panic!("{c:?}"));
        let names: Vec<&str> = v2["spec"]["containers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["name"].as_str())
            .collect();
        assert_eq!(names, vec!["app", "side"]);
        // Changing the first manager's container image conflicts on exactly that field.
        let steal = json!({"metadata": {"name": "d"}, "spec": {"containers": [{"name": "app", "image": "a:2"}]}});
        let c = apply(Some(&v2), &steal, "m2", false, None).err();
        assert_eq!(
            c,
            Some(vec![Conflict {
                manager: "m1".into(),
                field: ".spec.containers[name=\"app\"].image".into()
            }])
        );
        // m2 dropping its container removes it and leaves m1's.
        let none = json!({"metadata": {"name": "d"}, "spec": {}});
        let v3 = apply(Some(&v2), &none, "m2", false, None).unwrap_or_else(|c| panic!("{c:?}"));
        assert_eq!(
            v3["spec"]["containers"],
            json!([{"name": "app", "image": "a:1"}])
        );
        // managedFields round-trip keyed items.
        let m = read_managed(&v3);
        assert!(m.iter().any(|e| e.manager == "m1"
            && e.fields
                .iter()
                .any(|p| p.iter().any(|s| s == "k:{\"name\":\"app\"}"))));
    }

    #[test]
    fn updates_take_ownership_of_changed_fields() {
        let v1 = apply(
            None,
            &json!({"metadata": {"name": "c"}, "data": {"a": "1"}}),
            "m",
            false,
            None,
        )
        .unwrap_or_else(|c| panic!("{c:?}"));
        let mut v2 = v1.clone();
        v2["data"]["a"] = json!("2");
        track_update(Some(&v1), &mut v2, "kubectl-edit", None);
        let c = apply(
            Some(&v2),
            &json!({"metadata": {"name": "c"}, "data": {"a": "3"}}),
            "m",
            false,
            None,
        );
        assert_eq!(
            c.err(),
            Some(vec![Conflict {
                manager: "kubectl-edit".into(),
                field: ".data.a".into()
            }])
        );
    }
}
