//! The StatefulSet and DaemonSet controllers, after kube-controller-manager's
//! (`pkg/controller/statefulset`, `pkg/controller/daemon`): ControllerRevisions per pod
//! template, ordered pods `name-0..n-1` (OrderedReady: each waits for its predecessors to
//! be Running and Ready; Parallel), one pod per fitting Node, rolling updates within
//! `partition`/`maxUnavailable` (StatefulSet) and `maxUnavailable`/`maxSurge` (DaemonSet),
//! `OnDelete`, and the status fields `kubectl rollout status` reads.

use super::kubelet::node_fits;
use super::workloads::{
    active, delete_pod, deleting, finished, int_or_percent, owner_ref, pod_ready, template_hash,
    uid,
};
use super::{
    controller_revisions, daemonsets, mutate_if_exists, name_of, nodes, ns_of, parse_ts, pods,
    statefulsets, Shared,
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
        (k.group == "apps" && (k.plural == "statefulsets" || k.plural == "daemonsets"))
            || (k.group.is_empty() && (k.plural == "pods" || k.plural == "nodes"))
    };
    // Each pass looks only at the sets the events since the last one name (a set, or a pod
    // it owns); every second the sets with `minReadySeconds` (whose pods become available
    // with time, not with an event); a full pass every 5 s (longer on a large mesh, see
    // `SafetyNet`), on a Node change, after an error or a lagging watch catches anything else.
    const TIMER_EVERY: Duration = Duration::from_secs(1);
    let mut net = super::SafetyNet::new(Duration::from_secs(5));
    let mut changes = super::Changes::All;
    let mut last_timer = tokio::time::Instant::now();
    loop {
        let result = match &changes {
            super::Changes::Events(evs) if !net.due() && !evs.iter().any(|e| e.key == nodes()) => {
                reconcile_changed(&store, evs)
            }
            super::Changes::Due if !net.due() => Ok(()),
            _ => {
                last_timer = tokio::time::Instant::now();
                net.run(|| reconcile_all(&store))
            }
        };
        let result = result.and_then(|()| {
            if last_timer.elapsed() < TIMER_EVERY {
                return Ok(());
            }
            last_timer = tokio::time::Instant::now();
            reconcile_min_ready(&store)
        });
        if let Err(e) = result {
            tracing::warn!(error = %e, "statefulset/daemonset reconcile failed; retrying");
            net.now();
        }
        let deadline = net.deadline().min(last_timer + TIMER_EVERY);
        match super::wait_for_changes(&mut rx, &shared.cancel, deadline, &relevant).await {
            Some(c) => changes = c,
            None => return,
        }
    }
}

/// The sets with `minReadySeconds`: their pods' availability changes with time alone.
fn reconcile_min_ready(store: &Store) -> Result<(), StoreError> {
    let min_ready = |o: &Value| o["spec"]["minReadySeconds"].as_i64().unwrap_or(0) > 0;
    for s in store.list(&statefulsets(), None).0 {
        if min_ready(&s) {
            reconcile_statefulset(store, &s, &Index::of(store, &s))?;
        }
    }
    let dss: Vec<Arc<Value>> = store
        .list(&daemonsets(), None)
        .0
        .into_iter()
        .filter(|d| min_ready(d))
        .collect();
    if !dss.is_empty() {
        let (all_nodes, _) = store.list(&nodes(), None);
        for d in &dss {
            reconcile_daemonset(store, d, &Index::of(store, d), &all_nodes)?;
        }
    }
    Ok(())
}

/// The pods and ControllerRevisions one set's pass looks at, read once from the store's
/// owner index so that every count in the pass agrees.
struct Index {
    pods_by_owner: HashMap<String, Vec<Arc<Value>>>,
    revs_by_owner: HashMap<String, Vec<Arc<Value>>>,
}

impl Index {
    fn of(store: &Store, owner: &Value) -> Self {
        let u = uid(owner).to_string();
        Self {
            pods_by_owner: HashMap::from([(u.clone(), store.list_owned(&pods(), &u))]),
            revs_by_owner: HashMap::from([(
                u.clone(),
                store.list_owned(&controller_revisions(), &u),
            )]),
        }
    }
}

/// One pass over every StatefulSet and DaemonSet.
pub fn reconcile_all(store: &Store) -> Result<(), StoreError> {
    let (sets, _) = store.list(&statefulsets(), None);
    let (dss, _) = store.list(&daemonsets(), None);
    if sets.is_empty() && dss.is_empty() {
        return Ok(());
    }
    for s in &sets {
        reconcile_statefulset(store, s, &Index::of(store, s))?;
    }
    if !dss.is_empty() {
        let (all_nodes, _) = store.list(&nodes(), None);
        for d in &dss {
            reconcile_daemonset(store, d, &Index::of(store, d), &all_nodes)?;
        }
    }
    Ok(())
}

/// One pass over the StatefulSets and DaemonSets `events` name (a set, or a pod it owns),
/// as [`reconcile_all`] would treat them.
fn reconcile_changed(store: &Store, events: &[crate::store::WatchEvent]) -> Result<(), StoreError> {
    use super::controller_of_kind;
    use std::collections::BTreeSet;
    let mut sets: BTreeSet<(String, String)> = BTreeSet::new();
    let mut dss: BTreeSet<(String, String)> = BTreeSet::new();
    for ev in events {
        let o = &ev.object;
        let own = (ns_of(o).to_string(), name_of(o).to_string());
        match ev.key.plural.as_str() {
            "statefulsets" => {
                sets.insert(own);
            }
            "daemonsets" => {
                dss.insert(own);
            }
            "pods" => {
                for p in std::iter::once(o).chain(ev.previous.as_ref()) {
                    sets.extend(controller_of_kind(p, "StatefulSet"));
                    dss.extend(controller_of_kind(p, "DaemonSet"));
                }
            }
            _ => {}
        }
    }
    for (ns, name) in &sets {
        if let Some(s) = store.get(&statefulsets(), Some(ns), name) {
            reconcile_statefulset(store, &s, &Index::of(store, &s))?;
        }
    }
    if !dss.is_empty() {
        let (all_nodes, _) = store.list(&nodes(), None);
        for (ns, name) in &dss {
            if let Some(d) = store.get(&daemonsets(), Some(ns), name) {
                reconcile_daemonset(store, &d, &Index::of(store, &d), &all_nodes)?;
            }
        }
    }
    Ok(())
}

// === ControllerRevisions ===

fn revision_number(r: &Value) -> i64 {
    r["revision"].as_i64().unwrap_or(0)
}

/// The revision holding `template` (created, or renumbered when an older one comes back),
/// named `<owner>-<hash>`.
fn ensure_revision(
    store: &Store,
    owner: &Value,
    template: &Value,
    hash: &str,
    hash_label: &str,
    idx: &Index,
) -> Result<Arc<Value>, StoreError> {
    let owned = idx
        .revs_by_owner
        .get(uid(owner))
        .cloned()
        .unwrap_or_default();
    let name = format!("{}-{hash}", name_of(owner));
    let max = owned.iter().map(|r| revision_number(r)).max().unwrap_or(0);
    if let Some(r) = owned.iter().find(|r| name_of(r) == name) {
        if revision_number(r) < max {
            // A rollback to an earlier template: it becomes the newest revision again.
            if let Some(updated) = mutate_if_exists(
                store,
                &controller_revisions(),
                Some(ns_of(owner)),
                &name,
                |o| {
                    o["revision"] = json!(max + 1);
                    Ok(())
                },
            )? {
                return Ok(updated);
            }
        }
        return Ok(r.clone());
    }
    let mut labels = template["metadata"]["labels"].clone();
    if !labels.is_object() {
        labels = json!({});
    }
    labels[hash_label] = json!(hash);
    let mut data_tpl = template.clone();
    data_tpl["$patch"] = json!("replace");
    let rev = json!({
        "apiVersion": "apps/v1", "kind": "ControllerRevision",
        "metadata": {"name": name, "namespace": ns_of(owner), "labels": labels, "ownerReferences": owner_ref(owner)},
        "data": {"spec": {"template": data_tpl}},
        "revision": max + 1,
    });
    match store.create(&controller_revisions(), rev) {
        Ok(r) => Ok(r),
        Err(StoreError::AlreadyExists { .. }) => store
            .get(&controller_revisions(), Some(ns_of(owner)), &name)
            .ok_or(StoreError::Conflict {
                plural: "controllerrevisions".into(),
                name,
            }),
        Err(e) => Err(e),
    }
}

/// The pod template a revision recorded.
fn revision_template(r: &Value) -> Value {
    let mut t = r["data"]["spec"]["template"].clone();
    if let Some(m) = t.as_object_mut() {
        m.remove("$patch");
    }
    t
}

/// Deletes revisions beyond `revisionHistoryLimit` that no pod and neither status revision
/// uses, oldest first.
fn truncate_history(
    store: &Store,
    owner: &Value,
    idx: &Index,
    live: &[&str],
    pods: &[Arc<Value>],
    pod_rev: impl Fn(&Value) -> String,
) -> Result<(), StoreError> {
    let limit = owner["spec"]["revisionHistoryLimit"]
        .as_i64()
        .unwrap_or(10)
        .max(0) as usize;
    let mut history: Vec<Arc<Value>> = idx
        .revs_by_owner
        .get(uid(owner))
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|r| !live.contains(&name_of(r)) && !pods.iter().any(|p| pod_rev(p) == name_of(r)))
        .collect();
    if history.len() <= limit {
        return Ok(());
    }
    history.sort_by_key(|r| revision_number(r));
    let n = history.len() - limit;
    for r in history.iter().take(n) {
        match store.delete(&controller_revisions(), Some(ns_of(r)), name_of(r)) {
            Ok(_) | Err(StoreError::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn running_and_ready(p: &Value) -> bool {
    p["status"]["phase"] == "Running" && pod_ready(p)
}

/// Ready for at least `minReadySeconds` (`podutil.IsPodAvailable`).
fn available(p: &Value, min_ready: i64) -> bool {
    if !pod_ready(p) {
        return false;
    }
    if min_ready <= 0 {
        return true;
    }
    let since = p["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
        .and_then(|c| parse_ts(&c["lastTransitionTime"]));
    since.is_some_and(|t| jiff::Timestamp::now().duration_since(t).as_secs() >= min_ready)
}

// === StatefulSet ===

const STS_REVISION_LABEL: &str = "controller-revision-hash";

fn ordinal(set_name: &str, pod: &Value) -> Option<i64> {
    name_of(pod)
        .strip_prefix(set_name)?
        .strip_prefix('-')?
        .parse::<i64>()
        .ok()
        .filter(|o| *o >= 0)
}

fn pod_revision(p: &Value) -> String {
    p["metadata"]["labels"][STS_REVISION_LABEL]
        .as_str()
        .unwrap_or("")
        .to_string()
}

fn new_sts_pod(set: &Value, rev: &Value, ord: i64) -> Value {
    let tpl = revision_template(rev);
    let name = format!("{}-{ord}", name_of(set));
    let mut meta = tpl["metadata"].clone();
    if !meta.is_object() {
        meta = json!({});
    }
    if !meta["labels"].is_object() {
        meta["labels"] = json!({});
    }
    meta["labels"][STS_REVISION_LABEL] = json!(name_of(rev));
    meta["labels"]["statefulset.kubernetes.io/pod-name"] = json!(name);
    meta["labels"]["apps.kubernetes.io/pod-index"] = json!(ord.to_string());
    meta["name"] = json!(name);
    meta["namespace"] = json!(ns_of(set));
    meta["ownerReferences"] = owner_ref(set);
    let mut spec = tpl["spec"].clone();
    spec["hostname"] = json!(name);
    if let Some(svc) = set["spec"]["serviceName"]
        .as_str()
        .filter(|s| !s.is_empty())
    {
        spec["subdomain"] = json!(svc);
    }
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec})
}

fn reconcile_statefulset(store: &Store, set: &Value, idx: &Index) -> Result<(), StoreError> {
    let ns = ns_of(set).to_string();
    let name = name_of(set).to_string();
    let spec = &set["spec"];
    let desired = spec["replicas"].as_i64().unwrap_or(1).max(0);
    let template = &spec["template"];
    let hash = template_hash(template);
    let update_rev = ensure_revision(
        store,
        set,
        template,
        &hash,
        "controller.kubernetes.io/hash",
        idx,
    )?;
    let revs = idx.revs_by_owner.get(uid(set)).cloned().unwrap_or_default();
    let current_rev = set["status"]["currentRevision"]
        .as_str()
        .and_then(|c| revs.iter().find(|r| name_of(r) == c).cloned())
        .unwrap_or_else(|| update_rev.clone());
    let (cur_name, upd_name) = (
        name_of(&current_rev).to_string(),
        name_of(&update_rev).to_string(),
    );
    let min_ready = spec["minReadySeconds"].as_i64().unwrap_or(0);
    let owned: Vec<Arc<Value>> = idx
        .pods_by_owner
        .get(uid(set))
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|p| ordinal(&name, p).is_some())
        .collect();

    // Status from the pods as they are (computeReplicaStatus).
    let mut st = json!({
        "observedGeneration": set["metadata"]["generation"].as_i64().unwrap_or(1),
        "replicas": owned.len(),
        "readyReplicas": owned.iter().filter(|p| running_and_ready(p)).count(),
        "availableReplicas": owned.iter().filter(|p| running_and_ready(p) && available(p, min_ready)).count(),
        "currentReplicas": owned.iter().filter(|p| !deleting(p) && pod_revision(p) == cur_name).count(),
        "updatedReplicas": owned.iter().filter(|p| !deleting(p) && pod_revision(p) == upd_name).count(),
        "currentRevision": cur_name,
        "updateRevision": upd_name,
        "collisionCount": set["status"]["collisionCount"].as_i64().unwrap_or(0),
    });
    let strategy = spec["updateStrategy"]["type"]
        .as_str()
        .unwrap_or("RollingUpdate");
    let rolling = strategy == "RollingUpdate";
    // completeRollingUpdate.
    if rolling && st["updatedReplicas"] == st["replicas"] && st["readyReplicas"] == st["replicas"] {
        st["currentRevision"] = json!(upd_name);
        st["currentReplicas"] = st["updatedReplicas"].clone();
    }
    if set["status"]["currentRevision"].is_string() || set["status"]["observedGeneration"].is_i64()
    {
        for k in [
            "observedGeneration",
            "replicas",
            "readyReplicas",
            "availableReplicas",
            "currentReplicas",
            "updatedReplicas",
            "currentRevision",
            "updateRevision",
            "collisionCount",
        ] {
            if set["status"][k] != st[k] {
                write_status(store, &crate::mesh::statefulsets(), &ns, &name, &st)?;
                break;
            }
        }
    } else {
        write_status(store, &crate::mesh::statefulsets(), &ns, &name, &st)?;
    }
    truncate_history(
        store,
        set,
        idx,
        &[&cur_name, &upd_name],
        &owned,
        pod_revision,
    )?;
    if deleting(set) {
        return Ok(());
    }

    let monotonic = spec["podManagementPolicy"].as_str() != Some("Parallel");
    let partition = spec["updateStrategy"]["rollingUpdate"]["partition"].as_i64();
    let mut replicas: Vec<Option<Arc<Value>>> = vec![None; desired as usize];
    let mut condemned: Vec<Arc<Value>> = Vec::new();
    for p in &owned {
        let ord = ordinal(&name, p).unwrap_or(-1);
        if ord < desired {
            replicas[ord as usize] = Some(p.clone());
        } else {
            condemned.push(p.clone());
        }
    }
    condemned.sort_by_key(|p| std::cmp::Reverse(ordinal(&name, p)));
    let healthy = |p: &Value| running_and_ready(p) && !deleting(p);
    let first_unhealthy: Option<String> = replicas
        .iter()
        .flatten()
        .find(|p| !healthy(p))
        .or_else(|| condemned.iter().rev().find(|p| !healthy(p)))
        .map(|p| name_of(p).to_string());
    let status_current = set["status"]["currentReplicas"].as_i64().unwrap_or(0);

    for (ord, slot) in replicas.iter().enumerate() {
        let ord = ord as i64;
        match slot {
            None => {
                // newVersionedStatefulSetPod: below the partition, the current revision.
                let at_current = rolling
                    && match partition {
                        Some(p) => ord < p,
                        None => ord < status_current,
                    };
                let rev = if at_current {
                    &current_rev
                } else {
                    &update_rev
                };
                match store.create(&pods(), new_sts_pod(set, rev, ord)) {
                    Ok(_) | Err(StoreError::AlreadyExists { .. }) => {}
                    Err(e) => return Err(e),
                }
                if monotonic {
                    return Ok(());
                }
            }
            Some(p) => {
                if finished(p) {
                    // Recreate failed (and succeeded) pods.
                    if !deleting(p) {
                        delete_pod(store, p)?;
                    }
                    if monotonic {
                        return Ok(());
                    }
                    continue;
                }
                if monotonic && (deleting(p) || !running_and_ready(p) || !available(p, min_ready)) {
                    return Ok(());
                }
            }
        }
    }
    for p in &condemned {
        if deleting(p) {
            if monotonic {
                return Ok(());
            }
            continue;
        }
        if monotonic && !running_and_ready(p) && first_unhealthy.as_deref() != Some(name_of(p)) {
            return Ok(());
        }
        delete_pod(store, p)?;
        if monotonic {
            return Ok(());
        }
    }
    if !rolling {
        return Ok(());
    }
    // Rolling update, highest ordinal first, at most maxUnavailable unhealthy at a time.
    let max_unavailable = int_or_percent(
        &spec["updateStrategy"]["rollingUpdate"]["maxUnavailable"],
        desired,
        true,
        0,
    )
    .max(1);
    let unavailable = replicas
        .iter()
        .filter(|p| p.as_ref().is_none_or(|p| !healthy(p)))
        .count() as i64;
    if unavailable >= max_unavailable {
        return Ok(());
    }
    let mut budget = max_unavailable - unavailable;
    let floor = partition.unwrap_or(0).max(0);
    for ord in (floor..desired).rev() {
        if budget == 0 {
            break;
        }
        if let Some(p) = &replicas[ord as usize] {
            if pod_revision(p) != upd_name && !deleting(p) {
                delete_pod(store, p)?;
                budget -= 1;
            }
        }
    }
    Ok(())
}

fn write_status(
    store: &Store,
    k: &crate::store::ResourceKey,
    ns: &str,
    name: &str,
    st: &Value,
) -> Result<(), StoreError> {
    mutate_if_exists(store, k, Some(ns), name, |o| {
        let conds = o["status"]["conditions"].clone();
        o["status"] = st.clone();
        if conds.is_array() {
            o["status"]["conditions"] = conds;
        }
        Ok(())
    })?;
    Ok(())
}

// === DaemonSet ===

const DS_HASH_LABEL: &str = "controller-revision-hash";

/// The tolerations the DaemonSet controller adds to its pods.
fn daemon_tolerations(spec: &mut Value) {
    if !spec["tolerations"].is_array() {
        spec["tolerations"] = json!([]);
    }
    let add = [
        ("node.kubernetes.io/not-ready", "NoExecute"),
        ("node.kubernetes.io/unreachable", "NoExecute"),
        ("node.kubernetes.io/disk-pressure", "NoSchedule"),
        ("node.kubernetes.io/memory-pressure", "NoSchedule"),
        ("node.kubernetes.io/pid-pressure", "NoSchedule"),
        ("node.kubernetes.io/unschedulable", "NoSchedule"),
    ];
    if let Some(ts) = spec["tolerations"].as_array_mut() {
        for (key, effect) in add {
            if !ts.iter().any(|t| t["key"] == key && t["effect"] == effect) {
                ts.push(json!({"key": key, "operator": "Exists", "effect": effect}));
            }
        }
    }
}

/// The node a daemon pod is bound (or pinned by affinity) to.
fn daemon_pod_node(p: &Value) -> Option<String> {
    if let Some(n) = p["spec"]["nodeName"].as_str().filter(|n| !n.is_empty()) {
        return Some(n.to_string());
    }
    p["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        ["nodeSelectorTerms"][0]["matchFields"][0]["values"][0]
        .as_str()
        .map(str::to_string)
}

fn new_daemon_pod(ds: &Value, node: &str, hash: &str) -> Value {
    let tpl = &ds["spec"]["template"];
    let mut meta = tpl["metadata"].clone();
    if !meta.is_object() {
        meta = json!({});
    }
    if !meta["labels"].is_object() {
        meta["labels"] = json!({});
    }
    meta["labels"][DS_HASH_LABEL] = json!(hash);
    meta["labels"]["pod-template-generation"] = json!(ds["metadata"]["generation"]
        .as_i64()
        .unwrap_or(1)
        .to_string());
    meta["generateName"] = json!(format!("{}-", name_of(ds)));
    meta["namespace"] = json!(ns_of(ds));
    meta["ownerReferences"] = owner_ref(ds);
    if let Some(m) = meta.as_object_mut() {
        m.remove("name");
    }
    let mut spec = tpl["spec"].clone();
    daemon_tolerations(&mut spec);
    spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"] = json!({
        "nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}],
    });
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec})
}

fn oldest_first(ps: &mut [Arc<Value>]) {
    ps.sort_by(|a, b| {
        a["metadata"]["creationTimestamp"]
            .as_str()
            .cmp(&b["metadata"]["creationTimestamp"].as_str())
            .then_with(|| name_of(a).cmp(name_of(b)))
    });
}

fn reconcile_daemonset(
    store: &Store,
    ds: &Value,
    idx: &Index,
    all_nodes: &[Arc<Value>],
) -> Result<(), StoreError> {
    let ns = ns_of(ds).to_string();
    let name = name_of(ds).to_string();
    let spec = &ds["spec"];
    let template = &spec["template"];
    let hash = template_hash(template);
    let rev = ensure_revision(store, ds, template, &hash, DS_HASH_LABEL, idx)?;
    let min_ready = spec["minReadySeconds"].as_i64().unwrap_or(0);
    let mut sched_spec = template["spec"].clone();
    daemon_tolerations(&mut sched_spec);
    let owned: Vec<Arc<Value>> = idx.pods_by_owner.get(uid(ds)).cloned().unwrap_or_default();
    let updated = |p: &Value| p["metadata"]["labels"][DS_HASH_LABEL] == hash.as_str();
    let mut by_node: HashMap<String, Vec<Arc<Value>>> = HashMap::new();
    let mut orphans = Vec::new();
    for p in &owned {
        // Finished pods that were deleted do not count.
        if finished(p) && deleting(p) {
            continue;
        }
        match daemon_pod_node(p) {
            Some(n) if all_nodes.iter().any(|x| name_of(x) == n) => {
                by_node.entry(n).or_default().push(p.clone())
            }
            _ => orphans.push(p.clone()),
        }
    }
    let should_run: HashMap<String, bool> = all_nodes
        .iter()
        .map(|n| (name_of(n).to_string(), node_fits(n, &sched_spec)))
        .collect();

    // Status (updateDaemonSetStatus): one look per node, at its oldest pod.
    let (mut desired, mut current, mut misscheduled, mut ready, mut avail, mut upd) =
        (0i64, 0i64, 0i64, 0i64, 0i64, 0i64);
    for n in all_nodes {
        let mut ps = by_node.get(name_of(n)).cloned().unwrap_or_default();
        oldest_first(&mut ps);
        let runs = should_run.get(name_of(n)).copied().unwrap_or(false);
        if runs {
            desired += 1;
            if let Some(p) = ps.first() {
                current += 1;
                if pod_ready(p) {
                    ready += 1;
                    if available(p, min_ready) {
                        avail += 1;
                    }
                }
                if updated(p) {
                    upd += 1;
                }
            }
        } else if !ps.is_empty() {
            misscheduled += 1;
        }
    }
    let mut st = json!({
        "observedGeneration": ds["metadata"]["generation"].as_i64().unwrap_or(1),
        "desiredNumberScheduled": desired,
        "currentNumberScheduled": current,
        "numberMisscheduled": misscheduled,
        "numberReady": ready,
        "numberAvailable": avail,
        "updatedNumberScheduled": upd,
    });
    if desired - avail > 0 {
        st["numberUnavailable"] = json!(desired - avail);
    }
    let differs = [
        "observedGeneration",
        "desiredNumberScheduled",
        "currentNumberScheduled",
        "numberMisscheduled",
        "numberReady",
        "numberAvailable",
        "updatedNumberScheduled",
        "numberUnavailable",
    ]
    .iter()
    .any(|k| ds["status"][*k] != st[*k]);
    if differs {
        write_status(store, &daemonsets(), &ns, &name, &st)?;
    }
    truncate_history(store, ds, idx, &[name_of(&rev)], &owned, |p| {
        format!(
            "{name}-{}",
            p["metadata"]["labels"][DS_HASH_LABEL]
                .as_str()
                .unwrap_or("")
        )
    })?;
    if deleting(ds) {
        return Ok(());
    }
    for p in &orphans {
        if !deleting(p) {
            delete_pod(store, p)?;
        }
    }

    let rolling = spec["updateStrategy"]["type"]
        .as_str()
        .unwrap_or("RollingUpdate")
        == "RollingUpdate";
    let ru = &spec["updateStrategy"]["rollingUpdate"];
    let mut max_surge = if rolling {
        int_or_percent(&ru["maxSurge"], desired, true, 0)
    } else {
        0
    };
    let mut max_unavailable = int_or_percent(&ru["maxUnavailable"], desired, true, 0);
    if ru["maxUnavailable"].is_null() {
        max_unavailable = 1;
    }
    if max_surge == 0 && max_unavailable == 0 {
        max_unavailable = 1;
    }
    if !rolling {
        max_surge = 0;
    }

    // The manage loop: one pod per node that should run one; none elsewhere.
    let mut creates: Vec<String> = Vec::new();
    for n in all_nodes {
        let node = name_of(n).to_string();
        let ps = by_node.get(&node).cloned().unwrap_or_default();
        let runs = should_run.get(&node).copied().unwrap_or(false);
        if !runs {
            for p in ps.iter().filter(|p| !deleting(p)) {
                delete_pod(store, p)?;
            }
            continue;
        }
        if ps.is_empty() {
            creates.push(node);
            continue;
        }
        let mut running: Vec<Arc<Value>> = Vec::new();
        for p in ps.iter().filter(|p| !deleting(p)) {
            if finished(p) {
                delete_pod(store, p)?;
            } else {
                running.push(p.clone());
            }
        }
        oldest_first(&mut running);
        if max_surge == 0 {
            for extra in running.iter().skip(1) {
                delete_pod(store, extra)?;
            }
        } else if running.is_empty() {
            creates.push(node);
        } else if running.len() > 1 {
            // Keep one new and one old pod at most; the rolling update retires the old.
            let newest_updated = running.iter().rev().find(|p| updated(p)).cloned();
            let oldest_old = running.iter().find(|p| !updated(p)).cloned();
            for p in &running {
                let keep = newest_updated.as_ref().is_some_and(|k| Arc::ptr_eq(k, p))
                    || oldest_old.as_ref().is_some_and(|k| Arc::ptr_eq(k, p));
                if !keep {
                    delete_pod(store, p)?;
                }
            }
        }
    }
    for node in &creates {
        match store.create(&pods(), new_daemon_pod(ds, node, &hash)) {
            Ok(_) | Err(StoreError::AlreadyExists { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    // The rolling update runs once the manage loop's creations are done (upstream waits
    // for its expectations).
    if !rolling || !creates.is_empty() {
        return Ok(());
    }

    // The rolling update (update.go rollingUpdate).
    let mut num_unavailable = 0i64;
    let mut replace_now: Vec<Arc<Value>> = Vec::new();
    let mut candidates: Vec<Arc<Value>> = Vec::new();
    let mut surge_nodes: Vec<String> = Vec::new();
    let mut surge_candidates: Vec<String> = Vec::new();
    let mut num_surge = 0i64;
    let empty = Vec::new();
    for n in all_nodes {
        let node = &name_of(n).to_string();
        if !should_run.get(node).copied().unwrap_or(false) {
            continue;
        }
        let live: Vec<&Arc<Value>> = by_node
            .get(node)
            .unwrap_or(&empty)
            .iter()
            .filter(|p| active(p))
            .collect();
        let new_pods: Vec<&&Arc<Value>> = live.iter().filter(|p| updated(p)).collect();
        let old_pods: Vec<&&Arc<Value>> = live.iter().filter(|p| !updated(p)).collect();
        if new_pods.len() > 1 || old_pods.len() > 1 {
            if max_surge == 0 {
                num_unavailable += 1;
            } else {
                num_surge += 1;
            }
            continue;
        }
        let (newp, oldp) = (new_pods.first(), old_pods.first());
        if max_surge == 0 {
            match (newp, oldp) {
                (None, None) | (Some(_), Some(_)) => num_unavailable += 1,
                (Some(np), None) => {
                    if !available(np, min_ready) {
                        num_unavailable += 1;
                    }
                }
                (None, Some(op)) => {
                    if !available(op, min_ready) {
                        replace_now.push((**op).clone());
                        num_unavailable += 1;
                    } else if num_unavailable < max_unavailable {
                        candidates.push((**op).clone());
                    }
                }
            }
        } else {
            match (newp, oldp) {
                (_, None) => {}
                (None, Some(op)) => {
                    if !available(op, min_ready) {
                        surge_nodes.push(node.clone());
                    } else if num_surge < max_surge {
                        surge_candidates.push(node.clone());
                    }
                }
                (Some(np), Some(op)) => {
                    if available(np, min_ready) {
                        replace_now.push((**op).clone());
                    } else {
                        num_surge += 1;
                    }
                }
            }
        }
    }
    if max_surge == 0 {
        let room = (max_unavailable - num_unavailable).max(0) as usize;
        for p in replace_now.iter().chain(candidates.iter().take(room)) {
            delete_pod(store, p)?;
        }
    } else {
        for p in &replace_now {
            delete_pod(store, p)?;
        }
        let room = (max_surge - num_surge).max(0) as usize;
        for node in surge_nodes.iter().chain(surge_candidates.iter().take(room)) {
            match store.create(&pods(), new_daemon_pod(ds, node, &hash)) {
                Ok(_) | Err(StoreError::AlreadyExists { .. }) => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}
