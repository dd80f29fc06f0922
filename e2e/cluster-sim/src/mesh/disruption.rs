//! The disruption controller (`pkg/controller/disruption`): a PodDisruptionBudget's status
//! from the pods it selects: `expectedPods`, `desiredHealthy` (from `minAvailable`, or
//! `maxUnavailable`/percentages against the owning controllers' scale), `currentHealthy`
//! (Ready, not terminating, not just evicted), `disruptionsAllowed`, the
//! `DisruptionAllowed` condition, and `SyncFailed` when the scale cannot be found. The
//! eviction subresource (`api::workloads::evict`) reads it.

use super::workloads::{deleting, int_or_percent, pod_ready};
use super::{
    deployments, mutate_if_exists, name_of, ns_of, parse_ts, pdbs, pods, replicasets,
    set_condition, statefulsets, Shared,
};
use crate::api::workloads::pdb_selects;
use crate::store::{Store, StoreError};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

/// How long an evicted pod stays out of `currentHealthy` while it has not gone yet.
const DELETION_TIMEOUT: i64 = 120;

pub(crate) async fn run(shared: Arc<Shared>) {
    let Ok((_, mut rx)) = shared.store.watch(None) else {
        return;
    };
    let relevant = |ev: &crate::store::WatchEvent| {
        let k = &ev.key;
        (k.group == "policy" && k.plural == "poddisruptionbudgets")
            || (k.group.is_empty() && k.plural == "pods")
            || (k.group == "apps" && ev.kind != "MODIFIED")
    };
    loop {
        if let Err(e) = reconcile_all(&shared.store) {
            tracing::warn!(error = %e, "disruption reconcile failed; retrying");
        }
        let deadline = Some(tokio::time::Instant::now() + Duration::from_secs(2));
        if !super::wait_for_change(&mut rx, &shared.cancel, deadline, &relevant).await {
            return;
        }
    }
}

pub fn reconcile_all(store: &Store) -> Result<(), StoreError> {
    let (all, _) = store.list(&pdbs(), None);
    if all.is_empty() {
        return Ok(());
    }
    let mut by_ns: HashMap<String, Vec<Arc<Value>>> = HashMap::new();
    for p in &all {
        by_ns.entry(ns_of(p).to_string()).or_default();
    }
    for (ns, list) in by_ns.iter_mut() {
        *list = store.list(&pods(), Some(ns)).0;
    }
    for pdb in &all {
        let ns_pods = &by_ns[ns_of(pdb)];
        let selected: Vec<&Arc<Value>> = ns_pods
            .iter()
            .filter(|p| pdb_selects(pdb, &p["metadata"]["labels"]))
            .collect();
        sync(store, pdb, &selected)?;
    }
    Ok(())
}

/// The scale of the controllers owning `pods` (Deployment through its ReplicaSet,
/// ReplicaSet, StatefulSet), or the error the real controller reports.
fn expected_scale(store: &Store, pods: &[&Arc<Value>]) -> Result<i64, String> {
    let mut scales: BTreeMap<String, i64> = BTreeMap::new();
    for p in pods {
        let owner = p["metadata"]["ownerReferences"]
            .as_array()
            .and_then(|rs| rs.iter().find(|r| r["controller"].as_bool() == Some(true)));
        let Some(owner) = owner else {
            return Err(format!("found no controllers for pod {:?}", name_of(p)));
        };
        let ns = ns_of(p);
        let oname = owner["name"].as_str().unwrap_or("");
        let found = match owner["kind"].as_str() {
            Some("ReplicaSet") => store.get(&replicasets(), Some(ns), oname).map(|rs| {
                let dep = rs["metadata"]["ownerReferences"]
                    .as_array()
                    .and_then(|a| a.iter().find(|r| r["kind"] == "Deployment"))
                    .and_then(|d| d["name"].as_str())
                    .and_then(|d| store.get(&deployments(), Some(ns), d));
                match dep {
                    Some(d) => (
                        format!("d/{}", super::workloads::uid(&d)),
                        d["spec"]["replicas"].as_i64().unwrap_or(1),
                    ),
                    None => (
                        format!("rs/{}", super::workloads::uid(&rs)),
                        rs["spec"]["replicas"].as_i64().unwrap_or(1),
                    ),
                }
            }),
            Some("StatefulSet") => store.get(&statefulsets(), Some(ns), oname).map(|s| {
                (
                    format!("sts/{}", super::workloads::uid(&s)),
                    s["spec"]["replicas"].as_i64().unwrap_or(1),
                )
            }),
            _ => None,
        };
        match found {
            Some((k, n)) => {
                scales.insert(k, n);
            }
            None => return Err(format!("found no controllers for pod {:?}", name_of(p))),
        }
    }
    Ok(scales.values().sum())
}

fn sync(store: &Store, pdb: &Value, pods: &[&Arc<Value>]) -> Result<(), StoreError> {
    let spec = &pdb["spec"];
    let generation = pdb["metadata"]["generation"].as_i64().unwrap_or(1);
    let computed: Result<(i64, i64), String> = if !spec["maxUnavailable"].is_null() {
        expected_scale(store, pods).map(|expected| {
            let mu = int_or_percent(&spec["maxUnavailable"], expected, true, 0);
            (expected, (expected - mu).max(0))
        })
    } else if let Some(n) = spec["minAvailable"].as_i64() {
        Ok((pods.len() as i64, n))
    } else if spec["minAvailable"].is_string() {
        expected_scale(store, pods).map(|expected| {
            (
                expected,
                int_or_percent(&spec["minAvailable"], expected, true, 0),
            )
        })
    } else {
        Ok((pods.len() as i64, 0))
    };
    let now = jiff::Timestamp::now();
    // Evictions not yet reflected: pods that are still there and not deleting.
    let mut disrupted = serde_json::Map::new();
    if let Some(m) = pdb["status"]["disruptedPods"].as_object() {
        for (name, t) in m {
            let at = parse_ts(t);
            let recent = at.is_some_and(|t| now.duration_since(t).as_secs() < DELETION_TIMEOUT);
            // The evicted pod itself, not yet deleting (a StatefulSet's replacement of the
            // same name, created after the eviction, is a new pod).
            let pending = pods.iter().any(|p| {
                name_of(p) == name
                    && !deleting(p)
                    && parse_ts(&p["metadata"]["creationTimestamp"])
                        .zip(at)
                        .is_some_and(|(c, t)| c < t)
            });
            if recent && pending {
                disrupted.insert(name.clone(), t.clone());
            }
        }
    }
    let current_healthy = pods
        .iter()
        .filter(|p| !deleting(p) && !disrupted.contains_key(name_of(p)) && pod_ready(p))
        .count() as i64;
    let ns = ns_of(pdb).to_string();
    let name = name_of(pdb).to_string();
    mutate_if_exists(store, &pdbs(), Some(&ns), &name, |o| {
        if !o["status"].is_object() {
            o["status"] = json!({});
        }
        match &computed {
            Ok((expected, desired)) => {
                let mut allowed = current_healthy - desired;
                if *expected <= 0 || allowed <= 0 {
                    allowed = 0;
                }
                let st = &mut o["status"];
                st["observedGeneration"] = json!(generation);
                st["expectedPods"] = json!(expected);
                st["desiredHealthy"] = json!(desired);
                st["currentHealthy"] = json!(current_healthy);
                st["disruptionsAllowed"] = json!(allowed);
                if disrupted.is_empty() {
                    if let Some(m) = st.as_object_mut() {
                        m.remove("disruptedPods");
                    }
                } else {
                    st["disruptedPods"] = Value::Object(disrupted.clone());
                }
                if allowed > 0 {
                    set_condition(
                        o,
                        "DisruptionAllowed",
                        "True",
                        "SufficientPods",
                        "",
                        Some(generation),
                    );
                } else {
                    set_condition(
                        o,
                        "DisruptionAllowed",
                        "False",
                        "InsufficientPods",
                        "",
                        Some(generation),
                    );
                }
            }
            Err(msg) => {
                // failSafe: no disruption allowed, observedGeneration left as it was.
                o["status"]["disruptionsAllowed"] = json!(0);
                let observed = o["status"]["observedGeneration"].as_i64();
                set_condition(o, "DisruptionAllowed", "False", "SyncFailed", msg, observed);
            }
        }
        Ok(())
    })?;
    Ok(())
}
