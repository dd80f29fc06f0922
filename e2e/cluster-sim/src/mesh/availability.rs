//! An observer, not a controller: records, per Deployment, StatefulSet and DaemonSet, the
//! most pods it ever had unavailable (desired minus Ready, not terminating, pods it owns),
//! so that tests can check that restarts never took a workload below what its rollout
//! strategy allows. Read it with [`super::MeshHandle::max_unavailable`] (or the simulator's
//! `/metrics`: `cluster_sim_workload_max_unavailable{workload="ns/kind/name"}`); reset it
//! with [`super::MeshHandle::reset_max_unavailable`] once the topology is up (pods that are
//! starting count as unavailable).

use super::workloads::{deleting, pod_ready, uid};
use super::{daemonsets, deployments, name_of, ns_of, pods, replicasets, statefulsets, Shared};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// `ns/kind/name` → the most pods ever unavailable since the last reset.
#[derive(Default)]
pub struct MaxUnavailable(Mutex<BTreeMap<String, i64>>);

impl MaxUnavailable {
    pub fn snapshot(&self) -> BTreeMap<String, i64> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn reset(&self) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    fn record(&self, key: String, unavailable: i64) {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let e = m.entry(key).or_insert(0);
        *e = (*e).max(unavailable);
    }

    /// Prometheus text lines for the simulator's `/metrics`.
    pub fn metrics_text(&self) -> String {
        let mut out = String::from(
            "# HELP cluster_sim_workload_max_unavailable Most pods a workload had unavailable since the last reset\n# TYPE cluster_sim_workload_max_unavailable gauge\n",
        );
        for (k, v) in self.snapshot() {
            out.push_str(&format!(
                "cluster_sim_workload_max_unavailable{{workload=\"{k}\"}} {v}\n"
            ));
        }
        out
    }
}

pub(crate) async fn run(shared: Arc<Shared>) {
    let Ok((_, mut rx)) = shared.store.watch(None) else {
        return;
    };
    let relevant = |ev: &crate::store::WatchEvent| {
        let k = &ev.key;
        k.group == "apps" || (k.group.is_empty() && k.plural == "pods")
    };
    // Each pass looks at the workloads the events since the last one name (a workload, its
    // ReplicaSet, or a pod of theirs; that is every change unavailability depends on);
    // every workload every 5 s (longer on a large mesh, see `SafetyNet`), and after a
    // lagging receiver.
    let mut net = super::SafetyNet::new(Duration::from_secs(5));
    let mut changes = super::Changes::All;
    loop {
        match &changes {
            super::Changes::Events(evs) if !net.due() => observe_changed(&shared, evs),
            _ => net.run(|| observe(&shared)),
        }
        match super::wait_for_changes(&mut rx, &shared.cancel, net.deadline(), &relevant).await {
            Some(c) => changes = c,
            None => return,
        }
    }
}

/// Ready pods, not terminating, that `owner` controls.
fn ready_owned(store: &crate::store::Store, owner: &str) -> i64 {
    store
        .list_owned(&pods(), owner)
        .iter()
        .filter(|p| !deleting(p) && pod_ready(p))
        .count() as i64
}

/// Records one workload (`kind` as in the key: deployment, statefulset, daemonset).
fn observe_one(shared: &Shared, kind: &str, w: &Value) {
    let store = &shared.store;
    let (have, desired) = match kind {
        // A ReplicaSet's pods count for its Deployment.
        "deployment" => (
            store
                .list_owned(&replicasets(), uid(w))
                .iter()
                .map(|rs| ready_owned(store, uid(rs)))
                .sum(),
            w["spec"]["replicas"].as_i64().unwrap_or(1),
        ),
        "statefulset" => (
            ready_owned(store, uid(w)),
            w["spec"]["replicas"].as_i64().unwrap_or(1),
        ),
        _ => {
            // Before the controller has counted its nodes there is nothing to compare with.
            let Some(desired) = w["status"]["desiredNumberScheduled"].as_i64() else {
                return;
            };
            (ready_owned(store, uid(w)), desired)
        }
    };
    shared.max_unavailable.record(
        format!("{}/{kind}/{}", ns_of(w), name_of(w)),
        (desired - have).max(0),
    );
}

fn observe(shared: &Shared) {
    let store = &shared.store;
    for (kind, k) in [
        ("deployment", deployments()),
        ("statefulset", statefulsets()),
        ("daemonset", daemonsets()),
    ] {
        for w in store.list(&k, None).0 {
            observe_one(shared, kind, &w);
        }
    }
}

/// [`observe`] for the workloads `events` name.
fn observe_changed(shared: &Shared, events: &[crate::store::WatchEvent]) {
    use super::controller_of_kind;
    use std::collections::BTreeSet;
    let store = &shared.store;
    let mut dirty: BTreeSet<(&'static str, String, String)> = BTreeSet::new();
    let mut rss: BTreeSet<(String, String)> = BTreeSet::new();
    for ev in events {
        let o = &ev.object;
        let own = || (ns_of(o).to_string(), name_of(o).to_string());
        match ev.key.plural.as_str() {
            "deployments" | "statefulsets" | "daemonsets" if ev.kind == "DELETED" => {}
            "deployments" => {
                let (ns, n) = own();
                dirty.insert(("deployment", ns, n));
            }
            "statefulsets" => {
                let (ns, n) = own();
                dirty.insert(("statefulset", ns, n));
            }
            "daemonsets" => {
                let (ns, n) = own();
                dirty.insert(("daemonset", ns, n));
            }
            "replicasets" => {
                if let Some((ns, n)) = controller_of_kind(o, "Deployment") {
                    dirty.insert(("deployment", ns, n));
                }
            }
            "pods" => {
                for p in std::iter::once(o).chain(ev.previous.as_ref()) {
                    rss.extend(controller_of_kind(p, "ReplicaSet"));
                    if let Some((ns, n)) = controller_of_kind(p, "StatefulSet") {
                        dirty.insert(("statefulset", ns, n));
                    }
                    if let Some((ns, n)) = controller_of_kind(p, "DaemonSet") {
                        dirty.insert(("daemonset", ns, n));
                    }
                }
            }
            _ => {}
        }
    }
    for (ns, n) in &rss {
        if let Some(rs) = store.get(&replicasets(), Some(ns), n) {
            if let Some((ns, n)) = controller_of_kind(&rs, "Deployment") {
                dirty.insert(("deployment", ns, n));
            }
        }
    }
    for (kind, ns, n) in dirty {
        let k = match kind {
            "deployment" => deployments(),
            "statefulset" => statefulsets(),
            _ => daemonsets(),
        };
        if let Some(w) = store.get(&k, Some(&ns), &n) {
            observe_one(shared, kind, &w);
        }
    }
}
