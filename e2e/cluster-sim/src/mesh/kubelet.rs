//! The kubelet: gives each pod a unique loopback IP, starts its containers after the start
//! delay, resolves `configMapKeyRef` env at container start, runs the Linkerd proxy (and,
//! in identity pods, the identity controller), reports container statuses and readiness,
//! and crash-loops containers that cannot start, visibly (`CrashLoopBackOff`,
//! `restartCount`).

use super::proxy::{self, Proxy};
use super::{configmaps, linkerd, mutate_if_exists, name_of, now_rfc3339, ns_of, pods, Shared};
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Raises the soft open-file limit to the hard limit: every meshed pod holds a listener.
pub fn raise_fd_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => tracing::debug!(limit = n, "open-file limit"),
        Err(e) => tracing::warn!(error = %e, "could not raise the open-file limit"),
    }
}

/// Hands out unique pod IPs in 127.0.0.0/8 (never 127.0.0.x), starting at a seeded random
/// point so that simulators running side by side rarely collide; a meshed pod's IP is
/// only handed out once its admin port could be bound, so collisions are skipped.
pub struct IpAllocator {
    state: Mutex<(HashSet<Ipv4Addr>, u32)>,
}

const IP_SPACE: u32 = 254 * 65536;

impl IpAllocator {
    pub fn new(seed: u64) -> Self {
        let r: u32 = if seed == 0 {
            rand::random()
        } else {
            (seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as u32
        };
        Self {
            state: Mutex::new((HashSet::new(), r % IP_SPACE)),
        }
    }

    fn next_candidate(&self) -> Ipv4Addr {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            let n = st.1;
            st.1 = (st.1 + 1) % IP_SPACE;
            let second = (n / 65536) + 1; // 1..=254
            let third = (n / 256) % 256;
            let fourth = n % 256;
            if fourth == 0 || fourth == 255 {
                continue;
            }
            let ip = Ipv4Addr::new(127, second as u8, third as u8, fourth as u8);
            if st.0.insert(ip) {
                return ip;
            }
        }
    }

    /// An IP for a pod without a proxy.
    pub fn allocate(&self) -> Ipv4Addr {
        self.next_candidate()
    }

    /// An IP whose admin port is bound, with the listener.
    pub fn allocate_bound(&self, port: u16) -> std::io::Result<(Ipv4Addr, std::net::TcpListener)> {
        let mut last = None;
        for _ in 0..64 {
            let ip = self.next_candidate();
            match std::net::TcpListener::bind((ip, port)) {
                Ok(l) => {
                    l.set_nonblocking(true)?;
                    return Ok((ip, l));
                }
                Err(e) => {
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| std::io::Error::other("no free loopback address")))
    }

    pub fn release(&self, ip: Ipv4Addr) {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .0
            .remove(&ip);
    }
}

pub(crate) async fn run(shared: Arc<Shared>) {
    let store = shared.store.clone();
    let Ok((_, mut rx)) = store.watch(None) else {
        return;
    };
    let mut running: HashMap<String, CancellationToken> = HashMap::new();
    resync(&shared, &mut running);
    use tokio::sync::broadcast::error::RecvError;
    loop {
        let ev = tokio::select! {
            _ = shared.cancel.cancelled() => return,
            ev = rx.recv() => ev,
        };
        match ev {
            Ok(ev) if ev.key == pods() => {
                let uid = ev.object["metadata"]["uid"]
                    .as_str()
                    .unwrap_or("")
                    .to_string();
                if ev.kind == "DELETED" || ev.object["metadata"]["deletionTimestamp"].is_string() {
                    if let Some(t) = running.remove(&uid) {
                        t.cancel();
                    }
                } else if !running.contains_key(&uid) && ev.kind == "ADDED" {
                    start_pod(&shared, &mut running, &ev.object);
                }
            }
            Ok(_) => {}
            Err(RecvError::Lagged(_)) => resync(&shared, &mut running),
            Err(RecvError::Closed) => return,
        }
    }
}

fn resync(shared: &Arc<Shared>, running: &mut HashMap<String, CancellationToken>) {
    let (all, _) = shared.store.list(&pods(), None);
    let mut live = HashSet::new();
    for p in &all {
        let uid = p["metadata"]["uid"].as_str().unwrap_or("").to_string();
        live.insert(uid.clone());
        if !running.contains_key(&uid) && p["metadata"]["deletionTimestamp"].is_null() {
            start_pod(shared, running, p);
        }
    }
    running.retain(|uid, t| {
        if live.contains(uid) {
            true
        } else {
            t.cancel();
            false
        }
    });
}

fn start_pod(
    shared: &Arc<Shared>,
    running: &mut HashMap<String, CancellationToken>,
    pod: &Arc<Value>,
) {
    let uid = pod["metadata"]["uid"].as_str().unwrap_or("").to_string();
    let token = shared.cancel.child_token();
    running.insert(uid, token.clone());
    let shared = shared.clone();
    let pod = pod.clone();
    tokio::spawn(async move {
        let ns = ns_of(&pod).to_string();
        let name = name_of(&pod).to_string();
        if let Err(e) = run_pod(shared, pod, token).await {
            tracing::warn!(namespace = %ns, pod = %name, error = %e, "pod stopped");
        }
    });
}

/// The proxy container of a pod (in `containers` or, as a native sidecar, `initContainers`).
pub fn proxy_container(pod: &Value) -> Option<&Value> {
    ["containers", "initContainers"]
        .iter()
        .filter_map(|k| pod["spec"][*k].as_array())
        .flatten()
        .find(|c| c["name"] == super::PROXY_CONTAINER)
}

#[derive(Clone, Debug)]
enum CState {
    Waiting { reason: String, message: String },
    Running { started_at: String },
}

#[derive(Clone, Debug)]
struct ContainerRt {
    name: String,
    image: String,
    state: CState,
    ready: bool,
    restarts: u32,
    last_terminated: Option<Value>,
}

struct PodRt {
    ns: String,
    name: String,
    ip: Ipv4Addr,
    start_time: String,
    containers: Vec<ContainerRt>,
}

impl PodRt {
    fn set(&mut self, name: &str, f: impl FnOnce(&mut ContainerRt)) {
        if let Some(c) = self.containers.iter_mut().find(|c| c.name == name) {
            f(c);
        }
    }

    fn status(&self) -> Value {
        let running = self
            .containers
            .iter()
            .any(|c| matches!(c.state, CState::Running { .. }));
        let all_ready = !self.containers.is_empty() && self.containers.iter().all(|c| c.ready);
        let now = now_rfc3339();
        let b = |x: bool| if x { "True" } else { "False" };
        let statuses: Vec<Value> = self
            .containers
            .iter()
            .map(|c| {
                let state = match &c.state {
                    CState::Waiting { reason, message } => {
                        json!({"waiting": {"reason": reason, "message": message}})
                    }
                    CState::Running { started_at } => json!({"running": {"startedAt": started_at}}),
                };
                let mut s = json!({
                    "name": c.name, "image": c.image, "imageID": format!("sim://{}", c.image),
                    "ready": c.ready, "started": matches!(c.state, CState::Running { .. }),
                    "restartCount": c.restarts, "state": state,
                });
                if let CState::Running { started_at } = &c.state {
                    s["containerID"] =
                        json!(format!("sim://{}-{}-{}", self.name, c.name, started_at));
                }
                if let Some(lt) = &c.last_terminated {
                    s["lastState"] = json!({"terminated": lt});
                }
                s
            })
            .collect();
        let ip = self.ip.to_string();
        json!({
            "phase": if running { "Running" } else { "Pending" },
            "podIP": ip, "podIPs": [{"ip": ip}], "hostIP": ip, "hostIPs": [{"ip": ip}],
            "startTime": self.start_time,
            "qosClass": "BestEffort",
            "conditions": [
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": self.start_time},
                {"type": "Initialized", "status": "True", "lastTransitionTime": self.start_time},
                {"type": "ContainersReady", "status": b(all_ready), "lastTransitionTime": now},
                {"type": "Ready", "status": b(all_ready), "lastTransitionTime": now},
            ],
            "containerStatuses": statuses,
        })
    }
}

fn publish(shared: &Shared, rt: &Mutex<PodRt>) -> bool {
    let (ns, name, mut status) = {
        let rt = rt.lock().unwrap_or_else(|e| e.into_inner());
        (rt.ns.clone(), rt.name.clone(), rt.status())
    };
    let r = mutate_if_exists(&shared.store, &pods(), Some(&ns), &name, |o| {
        // Keep transition times of conditions whose status did not change.
        if let (Some(old), Some(new)) = (
            o["status"]["conditions"].as_array(),
            status["conditions"].as_array_mut(),
        ) {
            for c in new.iter_mut() {
                if let Some(oc) = old.iter().find(|oc| oc["type"] == c["type"]) {
                    if oc["status"] == c["status"] {
                        c["lastTransitionTime"] = oc["lastTransitionTime"].clone();
                    }
                }
            }
        }
        o["status"] = status.clone();
        Ok(())
    });
    matches!(r, Ok(Some(_)))
}

/// Resolves a container's env at start: inline values, and `configMapKeyRef` read from the
/// store now. An unresolvable reference is an error (`CreateContainerConfigError`).
fn resolve_env(
    store: &crate::store::Store,
    ns: &str,
    container: &Value,
) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for e in container["env"].as_array().into_iter().flatten() {
        let Some(name) = e["name"].as_str() else {
            continue;
        };
        if let Some(v) = e["value"].as_str() {
            out.push((name.to_string(), v.to_string()));
        } else if let Some(r) = e["valueFrom"]["configMapKeyRef"].as_object() {
            let cm = r.get("name").and_then(Value::as_str).unwrap_or("");
            let k = r.get("key").and_then(Value::as_str).unwrap_or("");
            let optional = r.get("optional").and_then(Value::as_bool).unwrap_or(false);
            match store
                .get(&configmaps(), Some(ns), cm)
                .and_then(|o| o["data"][k].as_str().map(str::to_string))
            {
                Some(v) => out.push((name.to_string(), v)),
                None if optional => {}
                None => return Err(format!("couldn't find key {k} in ConfigMap {ns}/{cm}")),
            }
        } else if e["value"].is_null() && e["valueFrom"].is_null() {
            out.push((name.to_string(), String::new()));
        }
    }
    Ok(out)
}

async fn run_pod(
    shared: Arc<Shared>,
    pod: Arc<Value>,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let ns = ns_of(&pod).to_string();
    let name = name_of(&pod).to_string();
    let meshed = proxy_container(&pod).is_some();
    let component = pod["metadata"]["labels"][super::LABEL_COMPONENT]
        .as_str()
        .map(str::to_string);
    let is_identity = ns == super::LINKERD_NS && component.as_deref() == Some("identity");
    let (ip, listener) = if meshed {
        let (ip, l) = shared.ips.allocate_bound(super::PROXY_ADMIN_PORT)?;
        (ip, Some(l))
    } else {
        (shared.ips.allocate(), None)
    };
    let containers: Vec<ContainerRt> = ["initContainers", "containers"]
        .iter()
        .filter_map(|k| pod["spec"][*k].as_array().map(|cs| (k, cs)))
        .flat_map(|(k, cs)| cs.iter().map(move |c| (k, c)))
        // Init containers are done by the time the pod runs, but a native-sidecar proxy.
        .filter(|(k, c)| **k == "containers" || c["name"] == super::PROXY_CONTAINER)
        .map(|(_, c)| ContainerRt {
            name: c["name"].as_str().unwrap_or("").to_string(),
            image: c["image"].as_str().unwrap_or("").to_string(),
            state: CState::Waiting {
                reason: "ContainerCreating".into(),
                message: String::new(),
            },
            ready: false,
            restarts: 0,
            last_terminated: None,
        })
        .collect();
    let rt = Arc::new(Mutex::new(PodRt {
        ns: ns.clone(),
        name: name.clone(),
        ip,
        start_time: now_rfc3339(),
        containers,
    }));
    if meshed {
        shared.proxies.meshed_pod_started();
    }
    let guard = PodGuard {
        shared: shared.clone(),
        ip,
        ns: ns.clone(),
        name: name.clone(),
        meshed,
    };
    // Holding the admitted pod for the pod's lifetime would keep a stale copy alive.
    drop(pod);
    if !publish(&shared, &rt) {
        return Ok(());
    }
    tokio::select! {
        _ = cancel.cancelled() => return Ok(()),
        _ = tokio::time::sleep(shared.durations.pod_start) => {}
    }
    let Some(current) = shared.store.get(&pods(), Some(&ns), &name) else {
        return Ok(());
    };
    // What the proxy needs from the pod; the pod object itself is not kept.
    let proxy_spec = proxy_container(&current).cloned();
    let pod_ref = json!({
        "metadata": {"namespace": ns, "name": name, "labels": current["metadata"]["labels"]},
        "spec": {"serviceAccountName": current["spec"]["serviceAccountName"]},
    });
    drop(current);

    // Plain containers start now.
    let started = now_rfc3339();
    {
        let mut r = rt.lock().unwrap_or_else(|e| e.into_inner());
        for c in r.containers.iter_mut() {
            if c.name != super::PROXY_CONTAINER && !(is_identity && c.name == "identity") {
                c.state = CState::Running {
                    started_at: started.clone(),
                };
                c.ready = true;
            }
        }
    }
    if listener.is_none() {
        // Meshed pods publish once, with the proxy's state (one watch event less per pod).
        publish(&shared, &rt);
    }

    // The identity controller, restarted with back-off while it cannot start.
    if is_identity {
        let shared2 = shared.clone();
        let rt2 = rt.clone();
        let cancel2 = cancel.clone();
        let (ns2, name2) = (ns.clone(), name.clone());
        tokio::spawn(async move {
            let mut attempt = 0u32;
            loop {
                match linkerd::IdentityInstance::start(&shared2.store, &ns2, &name2) {
                    Ok(inst) => {
                        shared2.identity.register(inst.clone());
                        let now = now_rfc3339();
                        rt2.lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .set("identity", |c| {
                                c.state = CState::Running { started_at: now };
                                c.ready = true;
                            });
                        publish(&shared2, &rt2);
                        cancel2.cancelled().await;
                        shared2.identity.deregister(&inst);
                        return;
                    }
                    Err(msg) => {
                        attempt += 1;
                        crash(&shared2, &rt2, "identity", attempt, &msg);
                        let backoff =
                            shared2.durations.crash_backoff * 2u32.pow(attempt.min(3) - 1);
                        tokio::select! {
                            _ = cancel2.cancelled() => return,
                            _ = tokio::time::sleep(backoff) => {}
                        }
                    }
                }
            }
        });
    }

    // The proxy.
    if let (Some(listener), Some(pc)) = (listener, proxy_spec) {
        let mut attempt = 0u32;
        let proxy = loop {
            match resolve_env(&shared.store, &ns, &pc)
                .map_err(|e| ("CreateContainerConfigError", e))
                .and_then(|env| {
                    Proxy::new(&shared, &pod_ref, ip, env)
                        .map_err(|e| ("CrashLoopBackOff", e.to_string()))
                }) {
                Ok(p) => break Arc::new(p),
                Err((reason, msg)) => {
                    attempt += 1;
                    if reason == "CrashLoopBackOff" {
                        crash(&shared, &rt, super::PROXY_CONTAINER, attempt, &msg);
                    } else {
                        rt.lock().unwrap_or_else(|e| e.into_inner()).set(
                            super::PROXY_CONTAINER,
                            |c| {
                                c.state = CState::Waiting {
                                    reason: reason.into(),
                                    message: msg.clone(),
                                };
                            },
                        );
                        publish(&shared, &rt);
                    }
                    let backoff = shared.durations.crash_backoff * 2u32.pow(attempt.min(4) - 1);
                    tokio::select! {
                        _ = cancel.cancelled() => return Ok(()),
                        _ = tokio::time::sleep(backoff) => {}
                    }
                }
            }
        };
        let now = now_rfc3339();
        rt.lock()
            .unwrap_or_else(|e| e.into_inner())
            .set(super::PROXY_CONTAINER, |c| {
                c.state = CState::Running { started_at: now };
            });
        shared.proxies.insert(proxy.clone());
        proxy::serve_admin(proxy.clone(), listener, cancel.clone())?;
        tokio::spawn(proxy::refresh_loop(
            shared.clone(),
            proxy.clone(),
            cancel.clone(),
        ));
        let mut certified = proxy.certified();
        // Usually the first certificate comes at once: then running and ready are one
        // status update (10,000 pods, 10,000 fewer versions in the watch history).
        let quick = tokio::time::timeout(Duration::from_millis(50), certified.wait_for(|c| *c));
        if !matches!(quick.await, Ok(Ok(_))) {
            publish(&shared, &rt);
            tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                r = certified.wait_for(|c| *c) => { r?; }
            }
        }
        if component.as_deref() == Some("proxy-injector") && ns == super::LINKERD_NS {
            let bundle = shared
                .store
                .get(&configmaps(), Some(&ns), super::TRUST_ROOTS_CM)
                .and_then(|cm| {
                    cm["data"][super::TRUST_ROOTS_KEY]
                        .as_str()
                        .map(str::to_string)
                });
            shared
                .bundle_view
                .injector_up(&name, bundle, shared.durations.volume_propagation);
        }
        rt.lock()
            .unwrap_or_else(|e| e.into_inner())
            .set(super::PROXY_CONTAINER, |c| c.ready = true);
        publish(&shared, &rt);
    }
    cancel.cancelled().await;
    drop(guard);
    Ok(())
}

fn crash(shared: &Shared, rt: &Mutex<PodRt>, container: &str, attempt: u32, msg: &str) {
    tracing::warn!(
        container,
        attempt,
        message = msg,
        "container failed to start"
    );
    let now = now_rfc3339();
    rt.lock().unwrap_or_else(|e| e.into_inner()).set(container, |c| {
        c.restarts = attempt.saturating_sub(1);
        c.ready = false;
        c.state = CState::Waiting {
            reason: if attempt > 1 { "CrashLoopBackOff".into() } else { "Error".into() },
            message: format!("back-off restarting failed container {container}: {msg}"),
        };
        c.last_terminated = Some(json!({"exitCode": 1, "reason": "Error", "message": msg, "startedAt": now, "finishedAt": now}));
    });
    publish(shared, rt);
}

/// Releases the pod's IP, proxy and injector registration when the pod task ends.
struct PodGuard {
    shared: Arc<Shared>,
    ip: Ipv4Addr,
    ns: String,
    name: String,
    meshed: bool,
}

impl Drop for PodGuard {
    fn drop(&mut self) {
        if self.meshed {
            self.shared.proxies.meshed_pod_stopped();
        }
        self.shared.proxies.remove(&self.ns, &self.name);
        if self.ns == super::LINKERD_NS {
            self.shared.bundle_view.injector_down(&self.name);
        }
        self.shared.ips.release(self.ip);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_ips_are_unique_loopback_and_never_the_api_servers() {
        let a = IpAllocator::new(42);
        let mut seen = HashSet::new();
        for _ in 0..200_000 {
            let ip = a.allocate();
            let o = ip.octets();
            assert_eq!(o[0], 127);
            assert_ne!(o[1], 0, "127.0.0.x is the API server's");
            assert!(o[3] != 0 && o[3] != 255);
            assert!(seen.insert(ip), "{ip} handed out twice");
        }
    }

    #[test]
    fn a_second_simulator_skips_addresses_bound_by_the_first() {
        let first = IpAllocator::new(9);
        let (ip, held) = first.allocate_bound(0).unwrap();
        let port = held.local_addr().unwrap().port();
        // Same seed, same starting point: the bound address is skipped.
        let second = IpAllocator::new(9);
        let (other, _l) = second.allocate_bound(port).unwrap();
        assert_ne!(other, ip);
    }

    #[test]
    fn seeds_spread_simulators_apart() {
        assert_ne!(
            IpAllocator::new(1).allocate(),
            IpAllocator::new(2).allocate()
        );
        assert_eq!(
            IpAllocator::new(3).allocate(),
            IpAllocator::new(3).allocate()
        );
    }
}
