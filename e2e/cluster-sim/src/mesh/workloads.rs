//! The Deployment and ReplicaSet controllers: a ReplicaSet per pod-template hash, rolling
//! updates that honour `maxSurge`/`maxUnavailable` (so `kubectl rollout restart` rolls
//! pods), pods created from the template (through admission, so the injector sees them)
//! and Deployment/ReplicaSet status that `kubectl rollout status` understands.

use super::{
    condition_true, deployments, mutate_if_exists, name_of, ns_of, pods, replicasets,
    set_condition, Shared,
};
use crate::store::{Store, StoreError};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

pub(crate) async fn run(shared: Arc<Shared>) {
    let store = shared.store.clone();
    let Ok((_, mut rx)) = store.watch(None) else {
        return;
    };
    let relevant = |ev: &crate::store::WatchEvent| {
        let k = &ev.key;
        (k.group == "apps" && (k.plural == "deployments" || k.plural == "replicasets"))
            || (k.group.is_empty() && k.plural == "pods")
    };
    // Each pass looks only at the Deployments and ReplicaSets the events since the last one
    // name; a full pass at least every two seconds (longer on a large mesh, see
    // `SafetyNet`; at once after an error or a lagging watch) catches anything else.
    let mut net = super::SafetyNet::new(Duration::from_secs(2));
    let mut changes = super::Changes::All;
    loop {
        let result = match &changes {
            super::Changes::Events(evs) if !net.due() => reconcile_changed(&store, evs),
            _ => net.run(|| reconcile_all(&store)),
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "workload reconcile failed; retrying");
            net.now();
        }
        match super::wait_for_changes(&mut rx, &shared.cancel, net.deadline(), &relevant).await {
            Some(c) => changes = c,
            None => return,
        }
    }
}

pub(crate) fn uid(o: &Value) -> &str {
    o["metadata"]["uid"].as_str().unwrap_or("")
}

pub(crate) fn controller_uid(o: &Value) -> Option<&str> {
    crate::store::controller_uid(o)
}

pub(crate) fn owner_ref(o: &Value) -> Value {
    json!([{
        "apiVersion": o["apiVersion"], "kind": o["kind"], "name": name_of(o), "uid": uid(o),
        "controller": true, "blockOwnerDeletion": true,
    }])
}

pub(crate) fn pod_ready(p: &Value) -> bool {
    condition_true(p, "Ready")
}

pub(crate) fn deleting(o: &Value) -> bool {
    o["metadata"]["deletionTimestamp"].is_string()
}

/// Finished: phase `Succeeded` or `Failed` (e.g. evicted).
pub(crate) fn finished(p: &Value) -> bool {
    matches!(p["status"]["phase"].as_str(), Some("Succeeded" | "Failed"))
}

/// What controllers count as a replica: not terminating, not finished (`FilterActivePods`).
pub(crate) fn active(p: &Value) -> bool {
    !deleting(p) && !finished(p)
}

/// Deletes a pod the way a controller does, through the API's pod deletion (graceful when
/// the pod runs on a Node).
pub(crate) fn delete_pod(store: &Store, p: &Value) -> Result<(), StoreError> {
    match crate::api::workloads::delete_pod(store, ns_of(p), name_of(p), None) {
        Ok(_) | Err(StoreError::NotFound { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Kubernetes' pod-template-hash: a stable hash of the template, in its safe alphabet.
pub fn template_hash(template: &Value) -> String {
    use sha2::Digest;
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let bytes = serde_json::to_vec(template).unwrap_or_default();
    let digest = sha2::Sha256::digest(&bytes);
    let mut n = u64::from_be_bytes(digest[..8].try_into().unwrap_or([0; 8]));
    (0..10)
        .map(|_| {
            let c = ALPHABET[(n % ALPHABET.len() as u64) as usize] as char;
            n /= ALPHABET.len() as u64;
            c
        })
        .collect()
}

/// Resolves an int-or-percent against `total` (percentages round up for surge, down for
/// unavailable, as Kubernetes does).
pub(crate) fn int_or_percent(v: &Value, total: i64, round_up: bool, default_pct: i64) -> i64 {
    let pct = |p: i64| {
        if round_up {
            (p * total + 99) / 100
        } else {
            p * total / 100
        }
    };
    match v {
        Value::Number(n) => n.as_i64().unwrap_or(0).max(0),
        Value::String(s) => match s.strip_suffix('%').and_then(|p| p.parse::<i64>().ok()) {
            Some(p) => pct(p),
            None => s.parse().unwrap_or(0),
        },
        _ => pct(default_pct),
    }
}

/// The ReplicaSets and pods one pass of a Deployment (or ReplicaSet) looks at, read once
/// from the store's owner index so that every count in the pass agrees.
struct Index {
    pods_by_owner: HashMap<String, Vec<Arc<Value>>>,
    rs_by_owner: HashMap<String, Vec<Arc<Value>>>,
}

impl Index {
    /// A Deployment's ReplicaSets and their pods.
    fn of_deployment(store: &Store, d: &Value) -> Self {
        let owned = store.list_owned(&replicasets(), uid(d));
        let pods_by_owner = owned
            .iter()
            .map(|rs| (uid(rs).to_string(), store.list_owned(&pods(), uid(rs))))
            .collect();
        Self {
            pods_by_owner,
            rs_by_owner: HashMap::from([(uid(d).to_string(), owned)]),
        }
    }

    /// A ReplicaSet's pods.
    fn of_replicaset(store: &Store, rs: &Value) -> Self {
        Self {
            pods_by_owner: HashMap::from([(
                uid(rs).to_string(),
                store.list_owned(&pods(), uid(rs)),
            )]),
            rs_by_owner: HashMap::new(),
        }
    }
}

/// One pass over every Deployment and ReplicaSet.
pub fn reconcile_all(store: &Store) -> Result<(), StoreError> {
    let (all_deploys, _) = store.list(&deployments(), None);
    for d in &all_deploys {
        if deleting(d) {
            continue;
        }
        reconcile_deployment(store, d, &Index::of_deployment(store, d))?;
    }
    // ReplicaSets after their Deployments set replicas (re-read for the new counts).
    let (all_rs, _) = store.list(&replicasets(), None);
    for rs in &all_rs {
        reconcile_replicaset(store, rs, &Index::of_replicaset(store, rs))?;
    }
    // Garbage: ReplicaSets whose Deployment is gone, pods whose ReplicaSet is gone.
    let deploy_uids: std::collections::HashSet<&str> = all_deploys.iter().map(|d| uid(d)).collect();
    for rs in &all_rs {
        let owner_kind = rs["metadata"]["ownerReferences"][0]["kind"].as_str();
        if owner_kind == Some("Deployment")
            && controller_uid(rs).is_some_and(|u| !deploy_uids.contains(u))
        {
            let _ = store.delete(&replicasets(), Some(ns_of(rs)), name_of(rs));
        }
    }
    let rs_uids: std::collections::HashSet<&str> = all_rs.iter().map(|r| uid(r)).collect();
    for p in store.list(&pods(), None).0 {
        if controller_uid(&p).is_some_and(|o| !rs_uids.contains(o))
            && p["metadata"]["ownerReferences"][0]["kind"].as_str() == Some("ReplicaSet")
        {
            let _ = store.delete(&pods(), Some(ns_of(&p)), name_of(&p));
        }
    }
    Ok(())
}

/// One pass over what `events` name: the Deployments and ReplicaSets that changed, the
/// ReplicaSets whose pods changed and the Deployments above them, as [`reconcile_all`]
/// would treat them; the garbage of a deleted Deployment or ReplicaSet.
pub(crate) fn reconcile_changed(
    store: &Store,
    events: &[crate::store::WatchEvent],
) -> Result<(), StoreError> {
    use super::controller_of_kind;
    use std::collections::BTreeSet;
    let mut deploys: BTreeSet<(String, String)> = BTreeSet::new();
    let mut rss: BTreeSet<(String, String)> = BTreeSet::new();
    let key_of = |o: &Value| (ns_of(o).to_string(), name_of(o).to_string());
    for ev in events {
        let o = &ev.object;
        match ev.key.plural.as_str() {
            "deployments" if ev.kind == "DELETED" => {
                for rs in store.list_owned(&replicasets(), uid(o)) {
                    if rs["metadata"]["ownerReferences"][0]["kind"].as_str() == Some("Deployment") {
                        let _ = store.delete(&replicasets(), Some(ns_of(&rs)), name_of(&rs));
                    }
                }
            }
            "deployments" => {
                deploys.insert(key_of(o));
            }
            "replicasets" => {
                deploys.extend(controller_of_kind(o, "Deployment"));
                if ev.kind == "DELETED" {
                    for p in store.list_owned(&pods(), uid(o)) {
                        if p["metadata"]["ownerReferences"][0]["kind"].as_str()
                            == Some("ReplicaSet")
                        {
                            let _ = store.delete(&pods(), Some(ns_of(&p)), name_of(&p));
                        }
                    }
                } else {
                    rss.insert(key_of(o));
                }
            }
            "pods" => {
                for p in std::iter::once(o).chain(ev.previous.as_ref()) {
                    rss.extend(controller_of_kind(p, "ReplicaSet"));
                }
            }
            _ => {}
        }
    }
    for (ns, name) in &rss {
        if let Some(rs) = store.get(&replicasets(), Some(ns), name) {
            deploys.extend(controller_of_kind(&rs, "Deployment"));
        }
    }
    for (ns, name) in &deploys {
        let Some(d) = store.get(&deployments(), Some(ns), name) else {
            continue;
        };
        if deleting(&d) {
            continue;
        }
        let idx = Index::of_deployment(store, &d);
        reconcile_deployment(store, &d, &idx)?;
        for rs in idx.rs_by_owner.values().flatten() {
            rss.insert(key_of(rs));
        }
    }
    // ReplicaSets after their Deployments set replicas (re-read for the new counts).
    for (ns, name) in &rss {
        if let Some(rs) = store.get(&replicasets(), Some(ns), name) {
            reconcile_replicaset(store, &rs, &Index::of_replicaset(store, &rs))?;
        }
    }
    Ok(())
}

struct RsCounts {
    pods: i64,
    ready: i64,
}

fn rs_counts(rs: &Value, idx: &Index) -> RsCounts {
    let ps = idx
        .pods_by_owner
        .get(uid(rs))
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    let live: Vec<_> = ps.iter().filter(|p| active(p)).collect();
    RsCounts {
        pods: live.len() as i64,
        ready: live.iter().filter(|p| pod_ready(p)).count() as i64,
    }
}

fn reconcile_deployment(store: &Store, d: &Value, idx: &Index) -> Result<(), StoreError> {
    let ns = ns_of(d).to_string();
    let name = name_of(d).to_string();
    let spec = &d["spec"];
    let desired = spec["replicas"].as_i64().unwrap_or(1).max(0);
    let template = spec["template"].clone();
    let hash = template_hash(&template);
    let owned: Vec<Arc<Value>> = idx.rs_by_owner.get(uid(d)).cloned().unwrap_or_default();
    let revision_of = |rs: &Value| {
        rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"]
            .as_str()
            .and_then(|s| s.parse::<i64>().ok())
            .unwrap_or(0)
    };
    let max_revision = owned.iter().map(|r| revision_of(r)).max().unwrap_or(0);
    let mut new_rs = owned
        .iter()
        .find(|r| r["metadata"]["labels"]["pod-template-hash"] == hash.as_str())
        .cloned();
    let strategy = &spec["strategy"];
    let recreate = strategy["type"].as_str() == Some("Recreate");
    let mut max_surge = int_or_percent(&strategy["rollingUpdate"]["maxSurge"], desired, true, 25);
    let max_unavailable = int_or_percent(
        &strategy["rollingUpdate"]["maxUnavailable"],
        desired,
        false,
        25,
    );
    if recreate {
        max_surge = 0;
    }
    let max_unavailable = if max_surge == 0 && max_unavailable == 0 {
        1
    } else {
        max_unavailable
    };
    let max_unavailable = if recreate { desired } else { max_unavailable };
    let old: Vec<Arc<Value>> = owned
        .iter()
        .filter(|r| r["metadata"]["labels"]["pod-template-hash"] != hash.as_str())
        .cloned()
        .collect();

    if new_rs.is_none() {
        let rs_name = format!("{name}-{hash}");
        let mut labels = template["metadata"]["labels"].clone();
        if !labels.is_object() {
            labels = json!({});
        }
        labels["pod-template-hash"] = json!(hash);
        let mut selector = spec["selector"].clone();
        if !selector["matchLabels"].is_object() {
            selector["matchLabels"] = json!({});
        }
        selector["matchLabels"]["pod-template-hash"] = json!(hash);
        let mut tpl = template.clone();
        tpl["metadata"]["labels"] = labels.clone();
        let old_total: i64 = old
            .iter()
            .map(|r| r["spec"]["replicas"].as_i64().unwrap_or(0))
            .sum();
        let initial = if old.is_empty() {
            desired
        } else {
            (desired + max_surge - old_total).clamp(0, desired)
        };
        let rs = json!({
            "apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {
                "name": rs_name, "namespace": ns, "labels": labels,
                "annotations": {
                    "deployment.kubernetes.io/revision": (max_revision + 1).to_string(),
                    "deployment.kubernetes.io/desired-replicas": desired.to_string(),
                    "deployment.kubernetes.io/max-replicas": (desired + max_surge).to_string(),
                },
                "ownerReferences": owner_ref(d),
            },
            "spec": {"replicas": initial, "selector": selector, "template": tpl},
        });
        match store.create(&replicasets(), rs) {
            Ok(created) => new_rs = Some(created),
            Err(StoreError::AlreadyExists { .. }) => return Ok(()),
            Err(e) => return Err(e),
        }
    }
    let Some(new_rs) = new_rs else { return Ok(()) };
    let new_replicas = new_rs["spec"]["replicas"].as_i64().unwrap_or(0);
    let new_counts = rs_counts(&new_rs, idx);

    // Scale up the new ReplicaSet within maxSurge.
    let all_spec: i64 = owned
        .iter()
        .filter(|r| uid(r) != uid(&new_rs))
        .map(|r| r["spec"]["replicas"].as_i64().unwrap_or(0))
        .sum::<i64>()
        + new_replicas;
    let mut target_new = new_replicas;
    if new_replicas < desired {
        let room = desired + max_surge - all_spec;
        target_new = (new_replicas + room.max(0)).min(desired);
    } else if new_replicas > desired {
        target_new = desired;
    }
    if target_new != new_replicas {
        set_replicas(store, &new_rs, target_new, desired, max_surge)?;
    }

    // Scale down old ReplicaSets within maxUnavailable: unready pods first, then as many
    // available ones as availability allows.
    let mut available: i64 =
        new_counts.ready + old.iter().map(|r| rs_counts(r, idx).ready).sum::<i64>();
    let min_available = desired - max_unavailable;
    let mut old_sorted = old.clone();
    old_sorted.sort_by_key(|r| revision_of(r));
    for rs in &old_sorted {
        let replicas = rs["spec"]["replicas"].as_i64().unwrap_or(0);
        if replicas == 0 {
            continue;
        }
        let c = rs_counts(rs, idx);
        let unready = (c.pods - c.ready).max(0).min(replicas);
        let ready_here = c.ready.min(replicas - unready);
        let budget = (available - min_available).max(0);
        let drop_ready = ready_here.min(budget);
        // Pods that were never created count as unready.
        let never_created = (replicas - c.pods).max(0);
        let drop = (unready + never_created).min(replicas) + drop_ready;
        let drop = drop.min(replicas);
        if drop > 0 {
            available -= drop_ready;
            set_replicas(store, rs, replicas - drop, desired, max_surge)?;
        }
    }

    // Status.
    let total_pods: i64 = new_counts.pods + old.iter().map(|r| rs_counts(r, idx).pods).sum::<i64>();
    let ready: i64 = new_counts.ready + old.iter().map(|r| rs_counts(r, idx).ready).sum::<i64>();
    let updated = new_counts.pods;
    let generation = d["metadata"]["generation"].as_i64().unwrap_or(1);
    let complete = updated == desired && total_pods == desired && new_counts.ready == desired;
    let rs_name = name_of(&new_rs).to_string();
    let status = json!({
        "observedGeneration": generation,
        "replicas": total_pods,
        "updatedReplicas": updated,
        "readyReplicas": ready,
        "availableReplicas": ready,
        "unavailableReplicas": (total_pods - ready).max(0).max(desired - ready),
    });
    let available_ok = ready >= min_available;
    let revision = new_rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"].clone();
    let unchanged = {
        let s = &d["status"];
        [
            "observedGeneration",
            "replicas",
            "updatedReplicas",
            "readyReplicas",
            "availableReplicas",
            "unavailableReplicas",
        ]
        .iter()
        .all(|k| s[*k] == status[*k])
            && condition_true(d, "Available") == available_ok
            && super::condition(d, "Progressing").map(|c| c["reason"].clone())
                == Some(json!(if complete {
                    "NewReplicaSetAvailable"
                } else {
                    "ReplicaSetUpdated"
                }))
            && d["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == revision
    };
    if !unchanged {
        mutate_if_exists(store, &deployments(), Some(&ns), &name, |o| {
            let conds = o["status"]["conditions"].clone();
            o["status"] = status.clone();
            if conds.is_array() {
                o["status"]["conditions"] = conds.clone();
            }
            if available_ok {
                set_condition(
                    o,
                    "Available",
                    "True",
                    "MinimumReplicasAvailable",
                    "Deployment has minimum availability.",
                    None,
                );
            } else {
                set_condition(
                    o,
                    "Available",
                    "False",
                    "MinimumReplicasUnavailable",
                    "Deployment does not have minimum availability.",
                    None,
                );
            }
            if complete {
                set_condition(
                    o,
                    "Progressing",
                    "True",
                    "NewReplicaSetAvailable",
                    &format!("ReplicaSet \"{rs_name}\" has successfully progressed."),
                    None,
                );
            } else {
                set_condition(
                    o,
                    "Progressing",
                    "True",
                    "ReplicaSetUpdated",
                    &format!("ReplicaSet \"{rs_name}\" is progressing."),
                    None,
                );
            }
            stamp_deployment_conditions(o, &conds);
            if !revision.is_null() {
                o["metadata"]["annotations"]["deployment.kubernetes.io/revision"] =
                    revision.clone();
            }
            Ok(())
        })?;
    }
    Ok(())
}

/// A Deployment condition's `lastUpdateTime`, as the deployment controller keeps it: a
/// condition whose status and reason did not change keeps its time (the controller leaves
/// it alone); a new status or reason is stamped now. (`kubectl rollout` and tools such as
/// `linkerd trust plan` read when a rollout completed from `Progressing` /
/// `NewReplicaSetAvailable`.)
fn stamp_deployment_conditions(o: &mut Value, before: &Value) {
    let now = super::now_rfc3339();
    let Some(conds) = o["status"]["conditions"].as_array_mut() else {
        return;
    };
    for c in conds.iter_mut() {
        let prev = before
            .as_array()
            .and_then(|b| b.iter().find(|p| p["type"] == c["type"]));
        c["lastUpdateTime"] = match prev {
            Some(p) if p["status"] == c["status"] && p["reason"] == c["reason"] => p
                .get("lastUpdateTime")
                .cloned()
                .unwrap_or_else(|| p["lastTransitionTime"].clone()),
            _ => json!(now),
        };
    }
}

fn set_replicas(
    store: &Store,
    rs: &Value,
    n: i64,
    desired: i64,
    max_surge: i64,
) -> Result<(), StoreError> {
    mutate_if_exists(store, &replicasets(), Some(ns_of(rs)), name_of(rs), |o| {
        o["spec"]["replicas"] = json!(n);
        o["metadata"]["annotations"]["deployment.kubernetes.io/desired-replicas"] =
            json!(desired.to_string());
        o["metadata"]["annotations"]["deployment.kubernetes.io/max-replicas"] =
            json!((desired + max_surge).to_string());
        Ok(())
    })?;
    Ok(())
}

fn reconcile_replicaset(store: &Store, rs: &Value, idx: &Index) -> Result<(), StoreError> {
    if deleting(rs) {
        return Ok(());
    }
    let ns = ns_of(rs).to_string();
    let replicas = rs["spec"]["replicas"].as_i64().unwrap_or(1).max(0);
    let ps: Vec<Arc<Value>> = idx.pods_by_owner.get(uid(rs)).cloned().unwrap_or_default();
    let live: Vec<&Arc<Value>> = ps.iter().filter(|p| active(p)).collect();
    let have = live.len() as i64;
    if have < replicas {
        let template = &rs["spec"]["template"];
        for _ in have..replicas {
            let mut meta = template["metadata"].clone();
            if !meta.is_object() {
                meta = json!({});
            }
            meta["generateName"] = json!(format!("{}-", name_of(rs)));
            meta["namespace"] = json!(ns);
            meta["ownerReferences"] = owner_ref(rs);
            if let Some(m) = meta.as_object_mut() {
                m.remove("name");
            }
            let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": template["spec"].clone()});
            match store.create(&pods(), pod) {
                Ok(_) | Err(StoreError::AlreadyExists { .. }) => {}
                Err(e) => return Err(e),
            }
        }
    } else if have > replicas {
        // Delete unready pods first, then the newest.
        let mut victims = live.clone();
        victims.sort_by(|a, b| {
            pod_ready(a).cmp(&pod_ready(b)).then_with(|| {
                b["metadata"]["creationTimestamp"]
                    .as_str()
                    .cmp(&a["metadata"]["creationTimestamp"].as_str())
            })
        });
        for p in victims.iter().take((have - replicas) as usize) {
            delete_pod(store, p)?;
        }
    }
    let ready = live.iter().filter(|p| pod_ready(p)).count() as i64;
    let status = json!({
        "replicas": have.min(replicas.max(have)),
        "fullyLabeledReplicas": have,
        "readyReplicas": ready,
        "availableReplicas": ready,
        "observedGeneration": rs["metadata"]["generation"].as_i64().unwrap_or(1),
    });
    if rs["status"] != status {
        mutate_if_exists(store, &replicasets(), Some(&ns), name_of(rs), |o| {
            o["status"] = status.clone();
            Ok(())
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_stable_and_changes_with_the_template() {
        let a = json!({"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "web"}]}});
        let mut b = a.clone();
        b["metadata"]["annotations"] =
            json!({"kubectl.kubernetes.io/restartedAt": "2026-01-01T00:00:00Z"});
        assert_eq!(template_hash(&a), template_hash(&a.clone()));
        assert_ne!(template_hash(&a), template_hash(&b));
        assert_eq!(template_hash(&a).len(), 10);
    }

    fn drain(
        rx: &mut tokio::sync::broadcast::Receiver<crate::store::WatchEvent>,
    ) -> Vec<crate::store::WatchEvent> {
        std::iter::from_fn(|| rx.try_recv().ok()).collect()
    }

    /// The incremental pass acts on what the events name even when the object is gone from
    /// the store by then: a pod deleted between passes is replaced, and a deleted
    /// ReplicaSet's pods are collected, without waiting for the periodic full pass.
    #[test]
    fn a_pass_over_the_changes_handles_objects_deleted_since_the_last_one() {
        let store = Store::new();
        crate::api::builtin::install(&store).unwrap();
        store
            .create(&deployments(), json!({
                "metadata": {"name": "web", "namespace": "default"},
                "spec": {
                    "replicas": 3,
                    "selector": {"matchLabels": {"app": "web"}},
                    "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "web", "image": "web:1"}]}},
                },
            }))
            .unwrap();
        let (_, mut rx) = store.watch(None).unwrap();
        reconcile_all(&store).unwrap();
        // The ReplicaSet (one pass) and its pods (the pass over its creation).
        reconcile_changed(&store, &drain(&mut rx)).unwrap();
        let (ps, _) = store.list(&pods(), Some("default"));
        assert_eq!(ps.len(), 3);
        drain(&mut rx);

        // Deleted outright (no grace: no Node), then only the events are looked at.
        store
            .delete(&pods(), Some("default"), name_of(&ps[0]))
            .unwrap();
        let evs = drain(&mut rx);
        assert!(evs.iter().all(|e| e.key == pods() && e.kind == "DELETED"));
        reconcile_changed(&store, &evs).unwrap();
        let (after, _) = store.list(&pods(), Some("default"));
        assert_eq!(after.len(), 3, "the deleted pod was replaced");
        assert!(after.iter().all(|p| uid(p) != uid(&ps[0])));
        drain(&mut rx);

        // Deleting the ReplicaSet (as `--cascade=orphan` would not) leaves its pods to the
        // controller: the next pass over that event collects them.
        let (rss, _) = store.list(&replicasets(), Some("default"));
        store
            .mutate(&deployments(), Some("default"), "web", |d| {
                d["spec"]["replicas"] = json!(0);
                Ok(())
            })
            .unwrap();
        store
            .delete(&replicasets(), Some("default"), name_of(&rss[0]))
            .unwrap();
        let evs = drain(&mut rx);
        reconcile_changed(&store, &evs).unwrap();
        let left: Vec<_> = store
            .list(&pods(), Some("default"))
            .0
            .into_iter()
            .filter(|p| !deleting(p))
            .collect();
        assert!(left.is_empty(), "pods of a deleted ReplicaSet: {left:?}");
    }

    #[test]
    fn surge_and_unavailable_round_like_kubernetes() {
        assert_eq!(int_or_percent(&Value::Null, 4, true, 25), 1);
        assert_eq!(int_or_percent(&Value::Null, 3, true, 25), 1);
        assert_eq!(int_or_percent(&Value::Null, 3, false, 25), 0);
        assert_eq!(int_or_percent(&json!("50%"), 3, true, 25), 2);
        assert_eq!(int_or_percent(&json!(2), 3, false, 25), 2);
    }
}
