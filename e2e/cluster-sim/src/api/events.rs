//! One Event, two APIs. A real API server stores each Event once and serves it both as
//! `v1` `Event` and as `events.k8s.io/v1` `Event`, converting the fields between the two
//! shapes (kubernetes `pkg/apis/events/v1/conversion.go`): what kube's recorder writes through
//! `events.k8s.io` is what `kubectl get events` (core `v1`) shows, and the other way round.
//!
//! The simulator keeps the two resources in separate stores, so this task mirrors them: every
//! change to an Event in one API is written, converted, to the same namespace and name in the
//! other, and a deletion is mirrored too. Simplification: the two copies have their own uid and
//! resourceVersion (a real server shows one of each), and the copy appears after the write
//! returns, not atomically with it.

use crate::store::{ResourceKey, Store, StoreError, WatchEvent};
use serde_json::{json, Map, Value};
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

fn core() -> ResourceKey {
    ResourceKey::new("", "events")
}

fn events_k8s_io() -> ResourceKey {
    ResourceKey::new("events.k8s.io", "events")
}

/// `(events.k8s.io field, core field)` pairs that carry the same value under two names.
const RENAMED: [(&str, &str); 7] = [
    ("regarding", "involvedObject"),
    ("note", "message"),
    ("reportingController", "reportingComponent"),
    ("deprecatedSource", "source"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedCount", "count"),
];

/// Fields with the same name and meaning in both shapes.
const SHARED: [&str; 7] = [
    "eventTime",
    "series",
    "action",
    "reason",
    "related",
    "reportingInstance",
    "type",
];

/// The other API's shape of `obj` (`to_core`: events.k8s.io → core, else core →
/// events.k8s.io), with the metadata a client set (name, namespace, labels, annotations).
pub fn convert(obj: &Value, to_core: bool) -> Value {
    let mut out = Map::new();
    out.insert(
        "apiVersion".into(),
        json!(if to_core { "v1" } else { "events.k8s.io/v1" }),
    );
    out.insert("kind".into(), json!("Event"));
    let mut meta = Map::new();
    for f in ["name", "namespace", "labels", "annotations"] {
        if let Some(v) = obj["metadata"].get(f).filter(|v| !v.is_null()) {
            meta.insert(f.into(), v.clone());
        }
    }
    out.insert("metadata".into(), Value::Object(meta));
    for (ev, co) in RENAMED {
        let (from, to) = if to_core { (ev, co) } else { (co, ev) };
        if let Some(v) = obj.get(from).filter(|v| !v.is_null()) {
            out.insert(to.into(), v.clone());
        }
    }
    for f in SHARED {
        if let Some(v) = obj.get(f).filter(|v| !v.is_null()) {
            out.insert(f.into(), v.clone());
        }
    }
    Value::Object(out)
}

/// What two Events say, ignoring the metadata the store assigns (uid, resourceVersion,
/// creationTimestamp, managedFields): equal content needs no write, which ends the echo of
/// a mirrored write.
fn same_content(a: &Value, b: &Value) -> bool {
    let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else {
        return a == b;
    };
    let content = |m: &'_ Map<String, Value>| m.len() - usize::from(m.contains_key("metadata"));
    content(a) == content(b)
        && a.iter()
            .filter(|(k, _)| *k != "metadata")
            .all(|(k, v)| b.get(k) == Some(v))
        && ["labels", "annotations"].iter().all(|f| {
            a.get("metadata").and_then(|m| m.get(f)) == b.get("metadata").and_then(|m| m.get(f))
        })
}

/// Mirrors one change (`kind` ADDED, MODIFIED or DELETED) of `obj`, a `key` object.
fn mirror(store: &Store, kind: &str, key: &ResourceKey, obj: &Value) {
    let to_core = if *key == events_k8s_io() {
        true
    } else if *key == core() {
        false
    } else {
        return;
    };
    let target = if to_core { core() } else { events_k8s_io() };
    let ns = obj["metadata"]["namespace"].as_str();
    let Some(name) = obj["metadata"]["name"].as_str() else {
        return;
    };
    let result = match kind {
        "ADDED" | "MODIFIED" => {
            let want = convert(obj, to_core);
            match store.get(&target, ns, name) {
                Some(have) if same_content(&convert(&have, !to_core), obj) => Ok(()),
                Some(_) => store
                    .mutate(&target, ns, name, |cur| {
                        let meta = cur["metadata"].take();
                        *cur = want;
                        let mut merged = meta;
                        for f in ["labels", "annotations"] {
                            match cur["metadata"].get(f) {
                                Some(v) => merged[f] = v.clone(),
                                None => {
                                    if let Some(m) = merged.as_object_mut() {
                                        m.remove(f);
                                    }
                                }
                            }
                        }
                        cur["metadata"] = merged;
                        Ok(())
                    })
                    .map(drop),
                None => store.create(&target, want).map(drop),
            }
        }
        "DELETED" => match store.delete(&target, ns, name) {
            Err(StoreError::NotFound { .. }) => Ok(()),
            other => other.map(drop),
        },
        _ => Ok(()),
    };
    match result {
        // The other copy was just written or removed by someone else: the next event settles it.
        Ok(()) | Err(StoreError::NotFound { .. }) | Err(StoreError::AlreadyExists { .. }) => {}
        Err(e) => tracing::warn!(error = %e, event = %name, "mirroring an Event failed"),
    }
}

fn on_event(store: &Store, ev: &WatchEvent) {
    mirror(store, ev.kind, &ev.key, &ev.object);
}

/// An object's resourceVersion as the store assigned it.
fn resource_version(obj: &Value) -> u64 {
    obj["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or(u64::MAX)
}

/// Mirrors Events between the two APIs until `cancel`.
pub async fn run(store: Store, cancel: CancellationToken) {
    let Ok((_, mut rx)) = store.watch(None) else {
        return;
    };
    // Every change up to this resourceVersion has been mirrored.
    let mut mirrored = store.resource_version();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            ev = rx.recv() => match ev {
                Ok(ev) => {
                    mirrored = mirrored.max(ev.resource_version);
                    on_event(&store, &ev);
                }
                // Missed events: mirror the Events written since the last one mirrored (a
                // pass over every Event, converting each, grew with the cluster's history
                // and, on a busy simulator, made it lag again).
                Err(RecvError::Lagged(_)) => {
                    let now = store.resource_version();
                    for key in [events_k8s_io(), core()] {
                        for obj in store.list(&key, None).0 {
                            if resource_version(&obj) > mirrored {
                                mirror(&store, "MODIFIED", &key, &obj);
                            }
                        }
                    }
                    mirrored = mirrored.max(now);
                }
                Err(RecvError::Closed) => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorder_fields_become_the_core_fields_kubectl_shows() {
        let ev = json!({
            "apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": "cluster.17f", "namespace": "default", "uid": "u1", "resourceVersion": "9"},
            "regarding": {"kind": "TrustAnchorRotation", "name": "cluster", "apiVersion": "trust.linkerd.io/v1alpha1"},
            "note": "restarted emojivoto/deployment/web", "reason": "WorkloadRestarted", "type": "Normal",
            "reportingController": "trust-rotation-operator", "reportingInstance": "op-1",
            "action": "Restart", "eventTime": "2026-12-02T16:00:00.000000Z",
            "series": {"count": 2, "lastObservedTime": "2026-12-02T16:00:05.000000Z"}
        });
        let c = convert(&ev, true);
        assert_eq!(c["apiVersion"], "v1");
        assert_eq!(c["involvedObject"]["kind"], "TrustAnchorRotation");
        assert_eq!(c["message"], "restarted emojivoto/deployment/web");
        assert_eq!(c["reportingComponent"], "trust-rotation-operator");
        assert_eq!(c["reason"], "WorkloadRestarted");
        assert_eq!(c["series"]["count"], 2);
        assert!(
            c["metadata"].get("uid").is_none(),
            "the store assigns its own"
        );
        // And back: nothing lost.
        let back = convert(&c, false);
        assert!(same_content(&back, &ev));
    }
}
