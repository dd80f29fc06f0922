//! An observer, not a controller: records, per Deployment, StatefulSet and DaemonSet, the
//! most pods it ever had unavailable (desired minus Ready, not terminating, pods it owns),
//! so that tests can check that restarts never took a workload below what its rollout
//! strategy allows. Read it with [`super::MeshHandle::max_unavailable`] (or the simulator's
//! `/metrics`: `cluster_sim_workload_max_unavailable{workload="ns/kind/name"}`); reset it
//! with [`super::MeshHandle::reset_max_unavailable`] once the topology is up (pods that are
//! starting count as unavailable).

use super::workloads::{controller_uid, deleting, pod_ready, uid};
use super::{daemonsets, deployments, name_of, ns_of, pods, replicasets, statefulsets, Shared};
use std::collections::{BTreeMap, HashMap};
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
    loop {
        observe(&shared);
        let deadline = Some(tokio::time::Instant::now() + Duration::from_millis(500));
        if !super::wait_for_change(&mut rx, &shared.cancel, deadline, &relevant).await {
            return;
        }
    }
}

fn observe(shared: &Shared) {
    let store = &shared.store;
    let (all_pods, _) = store.list(&pods(), None);
    let (all_rs, _) = store.list(&replicasets(), None);
    // Available pods by their controller's uid (a ReplicaSet's count goes to its Deployment).
    let rs_owner: HashMap<&str, &str> = all_rs
        .iter()
        .filter_map(|rs| Some((uid(rs), controller_uid(rs)?)))
        .collect();
    let mut available: HashMap<&str, i64> = HashMap::new();
    for p in &all_pods {
        if deleting(p) || !pod_ready(p) {
            continue;
        }
        let Some(owner) = controller_uid(p) else {
            continue;
        };
        let owner = rs_owner.get(owner).copied().unwrap_or(owner);
        *available.entry(owner).or_default() += 1;
    }
    let record = |kind: &str, w: &serde_json::Value, desired: i64| {
        let have = available.get(uid(w)).copied().unwrap_or(0);
        shared.max_unavailable.record(
            format!("{}/{kind}/{}", ns_of(w), name_of(w)),
            (desired - have).max(0),
        );
    };
    for d in store.list(&deployments(), None).0 {
        record(
            "deployment",
            &d,
            d["spec"]["replicas"].as_i64().unwrap_or(1),
        );
    }
    for s in store.list(&statefulsets(), None).0 {
        record(
            "statefulset",
            &s,
            s["spec"]["replicas"].as_i64().unwrap_or(1),
        );
    }
    for d in store.list(&daemonsets(), None).0 {
        // Before the controller has counted its nodes there is nothing to compare with.
        if let Some(desired) = d["status"]["desiredNumberScheduled"].as_i64() {
            record("daemonset", &d, desired);
        }
    }
}
