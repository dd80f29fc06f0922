//! `Table` responses for `kubectl get`: the columns a real server prints for the common
//! built-in kinds, CRD printer columns (with a JSONPath subset), and Name/Age otherwise.

use crate::store::ResourceType;
use serde_json::{json, Value};
use std::sync::Arc;

pub fn wants_table(accept: &str) -> bool {
    accept
        .split(',')
        .next()
        .is_some_and(|first| first.contains("as=Table"))
}

/// kubectl's short human durations ("96s", "5m3s", "4h", "3d").
pub fn human_age(ts: &str) -> String {
    let Ok(t) = ts.parse::<jiff::Timestamp>() else {
        return "<unknown>".to_string();
    };
    let secs = (jiff::Timestamp::now().as_second() - t.as_second()).max(0);
    let (m, h, d) = (secs / 60, secs / 3600, secs / 86400);
    if secs < 120 {
        format!("{secs}s")
    } else if m < 10 {
        let s = secs % 60;
        if s == 0 {
            format!("{m}m")
        } else {
            format!("{m}m{s}s")
        }
    } else if h < 3 {
        format!("{m}m")
    } else if h < 8 {
        let mm = m % 60;
        if mm == 0 {
            format!("{h}h")
        } else {
            format!("{h}h{mm}m")
        }
    } else if h < 48 {
        format!("{h}h")
    } else if d < 8 {
        let hh = h % 24;
        if hh == 0 {
            format!("{d}d")
        } else {
            format!("{d}d{hh}h")
        }
    } else {
        format!("{d}d")
    }
}

/// Evaluates a JSONPath subset: `.a.b`, `.a[0]`, `.a[*].b`, `.a[?(@.k=="v")].b`.
pub fn jsonpath<'a>(v: &'a Value, path: &str) -> Vec<&'a Value> {
    let path = path
        .trim()
        .trim_start_matches('{')
        .trim_end_matches('}')
        .trim_start_matches('$');
    let mut cur: Vec<&Value> = vec![v];
    let mut rest = path;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            let key = &r[..end];
            cur = cur.into_iter().filter_map(|c| c.get(key)).collect();
            rest = &r[end..];
        } else if let Some(r) = rest.strip_prefix('[') {
            let Some(end) = r.find(']') else {
                return Vec::new();
            };
            let sel = &r[..end];
            rest = &r[end + 1..];
            if sel == "*" {
                cur = cur
                    .into_iter()
                    .filter_map(Value::as_array)
                    .flatten()
                    .collect();
            } else if let Ok(i) = sel.parse::<usize>() {
                cur = cur.into_iter().filter_map(|c| c.get(i)).collect();
            } else if let Some(filter) = sel.strip_prefix("?(@.").and_then(|f| f.strip_suffix(')'))
            {
                let Some((k, want)) = filter.split_once("==") else {
                    return Vec::new();
                };
                let k = k.trim();
                let want = want.trim().trim_matches('"').trim_matches('\'');
                cur = cur
                    .into_iter()
                    .filter_map(Value::as_array)
                    .flatten()
                    .filter(|item| match item.get(k) {
                        Some(Value::String(s)) => s == want,
                        Some(other) => other.to_string().as_str() == want,
                        None => false,
                    })
                    .collect();
            } else {
                return Vec::new();
            }
        } else {
            return Vec::new();
        }
    }
    cur
}

fn cell(values: Vec<&Value>, kind: &str) -> Value {
    match values.as_slice() {
        [] => Value::Null,
        [one] if kind == "date" => one.as_str().map_or(Value::Null, |s| json!(human_age(s))),
        [one] => match one {
            Value::String(_) | Value::Number(_) | Value::Bool(_) => (*one).clone(),
            other => json!(other.to_string()),
        },
        many => json!(many
            .iter()
            .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string))
            .collect::<Vec<_>>()
            .join(",")),
    }
}

fn column(name: &str, kind: &str, format: &str, priority: i64) -> Value {
    json!({"name": name, "type": kind, "format": format, "description": "", "priority": priority})
}

type Cells = Box<dyn Fn(&Value) -> Vec<Value>>;

fn builtin_columns(t: &ResourceType) -> Option<(Vec<Value>, Cells)> {
    let age = |o: &Value| {
        json!(human_age(
            o["metadata"]["creationTimestamp"].as_str().unwrap_or("")
        ))
    };
    let int = |v: &Value| v.as_i64().unwrap_or(0);
    match (t.key.group.as_str(), t.key.plural.as_str()) {
        ("", "pods") => Some((
            vec![
                column("Ready", "string", "", 0),
                column("Status", "string", "", 0),
                column("Restarts", "string", "", 0),
                column("Age", "string", "", 0),
                column("IP", "string", "", 1),
            ],
            Box::new(move |o| {
                let total = o["spec"]["containers"].as_array().map_or(0, Vec::len);
                let statuses = o["status"]["containerStatuses"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                let ready = statuses
                    .iter()
                    .filter(|s| s["ready"].as_bool() == Some(true))
                    .count();
                let restarts: i64 = statuses.iter().map(|s| int(&s["restartCount"])).sum();
                let waiting = statuses
                    .iter()
                    .find_map(|s| s["state"]["waiting"]["reason"].as_str().map(str::to_string));
                let phase = if o["metadata"]["deletionTimestamp"].is_string() {
                    "Terminating".to_string()
                } else {
                    waiting.unwrap_or_else(|| {
                        o["status"]["phase"]
                            .as_str()
                            .unwrap_or("Pending")
                            .to_string()
                    })
                };
                vec![
                    json!(format!("{ready}/{total}")),
                    json!(phase),
                    json!(restarts.to_string()),
                    age(o),
                    o["status"]["podIP"].clone(),
                ]
            }),
        )),
        ("apps", "deployments") => Some((
            vec![
                column("Ready", "string", "", 0),
                column("Up-to-date", "integer", "", 0),
                column("Available", "integer", "", 0),
                column("Age", "string", "", 0),
            ],
            Box::new(move |o| {
                let s = &o["status"];
                vec![
                    json!(format!(
                        "{}/{}",
                        int(&s["readyReplicas"]),
                        int(&o["spec"]["replicas"])
                    )),
                    json!(int(&s["updatedReplicas"])),
                    json!(int(&s["availableReplicas"])),
                    age(o),
                ]
            }),
        )),
        ("apps", "replicasets") => Some((
            vec![
                column("Desired", "integer", "", 0),
                column("Current", "integer", "", 0),
                column("Ready", "integer", "", 0),
                column("Age", "string", "", 0),
            ],
            Box::new(move |o| {
                vec![
                    json!(int(&o["spec"]["replicas"])),
                    json!(int(&o["status"]["replicas"])),
                    json!(int(&o["status"]["readyReplicas"])),
                    age(o),
                ]
            }),
        )),
        ("", "configmaps") => Some((
            vec![
                column("Data", "integer", "", 0),
                column("Age", "string", "", 0),
            ],
            Box::new(move |o| {
                let n = o["data"].as_object().map_or(0, |m| m.len())
                    + o["binaryData"].as_object().map_or(0, |m| m.len());
                vec![json!(n), age(o)]
            }),
        )),
        ("", "secrets") => Some((
            vec![
                column("Type", "string", "", 0),
                column("Data", "integer", "", 0),
                column("Age", "string", "", 0),
            ],
            Box::new(move |o| {
                vec![
                    json!(o["type"].as_str().unwrap_or("Opaque")),
                    json!(o["data"].as_object().map_or(0, |m| m.len())),
                    age(o),
                ]
            }),
        )),
        ("", "namespaces") => Some((
            vec![
                column("Status", "string", "", 0),
                column("Age", "string", "", 0),
            ],
            Box::new(move |o| {
                vec![
                    json!(o["status"]["phase"].as_str().unwrap_or("Active")),
                    age(o),
                ]
            }),
        )),
        ("apiextensions.k8s.io", "customresourcedefinitions") => Some((
            vec![column("Created At", "date", "", 0)],
            Box::new(move |o| vec![o["metadata"]["creationTimestamp"].clone()]),
        )),
        _ => None,
    }
}

/// A `meta.k8s.io/v1` Table of `items`.
pub fn render(t: &ResourceType, items: &[Arc<Value>], rv: &str, cont: Option<&str>) -> Value {
    let name_col = json!({"name": "Name", "type": "string", "format": "name", "description": "Name must be unique within a namespace.", "priority": 0});
    let (mut columns, cells): (Vec<Value>, Cells) = if let Some((cols, f)) = builtin_columns(t) {
        (cols, f)
    } else if !t.printer_columns.is_empty() {
        let pcs = t.printer_columns.clone();
        let cols = pcs
            .iter()
            .map(|c| {
                column(
                    c["name"].as_str().unwrap_or(""),
                    c["type"].as_str().unwrap_or("string"),
                    c["format"].as_str().unwrap_or(""),
                    c["priority"].as_i64().unwrap_or(0),
                )
            })
            .collect();
        (
            cols,
            Box::new(move |o| {
                pcs.iter()
                    .map(|c| {
                        cell(
                            jsonpath(o, c["jsonPath"].as_str().unwrap_or("")),
                            c["type"].as_str().unwrap_or("string"),
                        )
                    })
                    .collect()
            }),
        )
    } else {
        (
            vec![column("Age", "date", "", 0)],
            Box::new(|o| {
                vec![json!(human_age(
                    o["metadata"]["creationTimestamp"].as_str().unwrap_or("")
                ))]
            }),
        )
    };
    columns.insert(0, name_col);
    let rows: Vec<Value> = items
        .iter()
        .map(|o| {
            let mut c = vec![o["metadata"]["name"].clone()];
            c.extend(cells(o));
            json!({
                "cells": c,
                "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": o["metadata"]},
            })
        })
        .collect();
    let mut meta = json!({"resourceVersion": rv});
    if let Some(c) = cont {
        meta["continue"] = json!(c);
    }
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": meta, "columnDefinitions": columns, "rows": rows})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jsonpath_filters_conditions() {
        let o = json!({"status": {"conditions": [{"type": "Ready", "status": "True"}, {"type": "Issuing", "status": "False"}]}});
        assert_eq!(
            jsonpath(&o, ".status.conditions[?(@.type == \"Ready\")].status"),
            vec![&json!("True")]
        );
        assert_eq!(jsonpath(&o, ".status.conditions[*].type").len(), 2);
        assert!(jsonpath(&o, ".status.missing").is_empty());
    }
}
