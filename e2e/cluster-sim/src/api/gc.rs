//! Garbage collection: objects whose every owner (`ownerReferences`) is gone are deleted, and
//! deleting a Namespace deletes what is in it. Runs in the background on the store's events,
//! with an index from owner uid to dependents, so each event costs O(its owner references).

use crate::store::{ResourceKey, Store, StoreError, WatchEvent};
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

type Dependent = (ResourceKey, Option<String>, String);

#[derive(Default)]
struct Index {
    live: HashSet<String>,
    dependents: HashMap<String, HashSet<Dependent>>,
}

fn owner_uids(obj: &Value) -> Vec<String> {
    obj["metadata"]["ownerReferences"]
        .as_array()
        .map(|refs| {
            refs.iter()
                .filter_map(|r| r["uid"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn ident(key: &ResourceKey, obj: &Value) -> Dependent {
    (
        key.clone(),
        obj["metadata"]["namespace"].as_str().map(str::to_string),
        obj["metadata"]["name"].as_str().unwrap_or("").to_string(),
    )
}

impl Index {
    fn add(&mut self, key: &ResourceKey, obj: &Value) {
        if let Some(uid) = obj["metadata"]["uid"].as_str() {
            self.live.insert(uid.to_string());
        }
        for o in owner_uids(obj) {
            self.dependents
                .entry(o)
                .or_default()
                .insert(ident(key, obj));
        }
    }

    fn rebuild(store: &Store) -> Self {
        let mut idx = Index::default();
        for t in store.resource_types() {
            let (items, _) = store.list(&t.key, None);
            for o in items {
                idx.add(&t.key, &o);
            }
        }
        idx
    }
}

/// Deletes `dep` if none of its owners is alive any more.
fn collect(store: &Store, idx: &Index, dep: &Dependent) {
    let (key, ns, name) = dep;
    let Some(obj) = store.get(key, ns.as_deref(), name) else {
        return;
    };
    let owners = owner_uids(&obj);
    if !owners.is_empty() && owners.iter().all(|u| !idx.live.contains(u)) {
        match store.delete(key, ns.as_deref(), name) {
            Ok(_) | Err(StoreError::NotFound { .. }) => {}
            Err(e) => tracing::warn!(error = %e, object = %name, "garbage collection failed"),
        }
    }
}

fn delete_namespace_contents(store: &Store, ns: &str) {
    for t in store.resource_types().into_iter().filter(|t| t.namespaced) {
        let (items, _) = store.list(&t.key, Some(ns));
        for o in items {
            if let Some(name) = o["metadata"]["name"].as_str() {
                let _ = store.delete(&t.key, Some(ns), name);
            }
        }
    }
}

fn on_event(store: &Store, idx: &mut Index, ev: &WatchEvent) {
    match ev.kind {
        "ADDED" | "MODIFIED" => {
            idx.add(&ev.key, &ev.object);
            let owners = owner_uids(&ev.object);
            if ev.kind == "ADDED"
                && !owners.is_empty()
                && owners.iter().all(|u| !idx.live.contains(u))
            {
                collect(store, idx, &ident(&ev.key, &ev.object));
            }
        }
        "DELETED" => {
            // A deleted dependent leaves its owners' sets (pods churn; owners stay).
            let me = ident(&ev.key, &ev.object);
            for owner in owner_uids(&ev.object) {
                if let Some(set) = idx.dependents.get_mut(&owner) {
                    set.remove(&me);
                    if set.is_empty() {
                        idx.dependents.remove(&owner);
                    }
                }
            }
            if let Some(uid) = ev.object["metadata"]["uid"].as_str() {
                idx.live.remove(uid);
                if let Some(deps) = idx.dependents.remove(uid) {
                    for d in deps {
                        collect(store, idx, &d);
                    }
                }
            }
            if ev.key == ResourceKey::new("", "namespaces") {
                if let Some(ns) = ev.object["metadata"]["name"].as_str() {
                    delete_namespace_contents(store, ns);
                }
            }
        }
        _ => {}
    }
}

/// Runs until `cancel`.
pub async fn run(store: Store, cancel: CancellationToken) {
    let Ok((_, mut rx)) = store.watch(None) else {
        return;
    };
    let mut idx = Index::rebuild(&store);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            ev = rx.recv() => match ev {
                Ok(ev) => on_event(&store, &mut idx, &ev),
                Err(RecvError::Lagged(_)) => {
                    idx = Index::rebuild(&store);
                    // Owners that vanished while we lagged leave dependents behind: sweep.
                    let deps: Vec<Dependent> = idx.dependents.values().flatten().cloned().collect();
                    for d in deps {
                        collect(&store, &idx, &d);
                    }
                }
                Err(RecvError::Closed) => return,
            }
        }
    }
}

/// Removes owner references to `uid` from every object (`propagationPolicy: Orphan`).
pub fn orphan_dependents(store: &Store, uid: &str) {
    if uid.is_empty() {
        return;
    }
    for t in store.resource_types() {
        let (items, _) = store.list(&t.key, None);
        for o in items
            .iter()
            .filter(|o| owner_uids(o).iter().any(|u| u == uid))
        {
            let ns = o["metadata"]["namespace"].as_str();
            let name = o["metadata"]["name"].as_str().unwrap_or("");
            let _ = store.mutate(&t.key, ns, name, |obj| {
                if let Some(refs) = obj["metadata"]["ownerReferences"].as_array_mut() {
                    refs.retain(|r| r["uid"].as_str() != Some(uid));
                }
                Ok(())
            });
        }
    }
}
