//! The scheduler and the kubelet: places each pod on a fitting Node (when the cluster has
//! Nodes), gives it a unique loopback IP, starts its containers after the start delay,
//! resolves `configMapKeyRef` env at container start, runs the Linkerd proxy (and, in
//! identity pods, the identity controller), reports container statuses and readiness,
//! crash-loops containers that cannot start, visibly (`CrashLoopBackOff`, `restartCount`),
//! runs containers' finite programs (`sleep 5; exit 1`) to a terminal phase per the
//! `restartPolicy`, terminates deleted pods gracefully (`preStop`, SIGTERM, grace period,
//! the proxy last) and evicts pods under (simulated) node pressure.

use super::listeners::{AdminListener, AdminPorts};
use super::proxy::{self, Proxy};
use super::{configmaps, linkerd, mutate_if_exists, name_of, now_rfc3339, ns_of, pods, Shared};
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

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
    pub async fn allocate_bound(
        &self,
        port: u16,
        ports: &AdminPorts,
    ) -> std::io::Result<(Ipv4Addr, AdminListener)> {
        let mut last = None;
        for _ in 0..64 {
            let ip = self.next_candidate();
            match ports.bind(ip, port).await {
                Ok(l) => return Ok((ip, l)),
                Err(e) => {
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| std::io::Error::other("no free loopback address")))
    }

    /// A requested IP (see [`requested_ip`]), with its admin port bound when `port` is set.
    /// Fails while another pod holds it, as the CNI's sandbox setup would.
    pub async fn claim(
        &self,
        ip: Ipv4Addr,
        port: Option<u16>,
        ports: &AdminPorts,
    ) -> std::io::Result<Option<AdminListener>> {
        if !self
            .state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .0
            .insert(ip)
        {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                format!("requested pod IP {ip} is in use by another pod"),
            ));
        }
        let Some(port) = port else {
            return Ok(None);
        };
        match ports.bind(ip, port).await {
            Ok(l) => Ok(Some(l)),
            Err(e) => {
                self.release(ip);
                Err(e)
            }
        }
    }

    pub fn release(&self, ip: Ipv4Addr) {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .0
            .remove(&ip);
    }
}

/// What the kubelet's watch tells a running pod.
#[derive(Clone, Debug, Default, PartialEq)]
struct Signals {
    /// The pod got a `deletionTimestamp`: stop within this many seconds.
    terminate: Option<i64>,
    /// Node-pressure eviction, with its message.
    evict: Option<String>,
    /// The application ignores SIGTERM (read from the pod as it is now, like `evict`, so
    /// annotating a running pod before deleting it takes effect).
    ignore_sigterm: bool,
}

struct PodHandle {
    cancel: CancellationToken,
    signals: tokio::sync::watch::Sender<Signals>,
}

fn signals_of(pod: &Value) -> Signals {
    Signals {
        terminate: pod["metadata"]["deletionTimestamp"].is_string().then(|| {
            pod["metadata"]["deletionGracePeriodSeconds"]
                .as_i64()
                .unwrap_or(30)
        }),
        evict: pod["metadata"]["annotations"][super::ANNOTATION_SIM_EVICT]
            .as_str()
            .map(str::to_string),
        ignore_sigterm: pod["metadata"]["annotations"][super::ANNOTATION_SIM_IGNORE_SIGTERM]
            .as_str()
            .is_some_and(|v| v == "true"),
    }
}

fn terminal(pod: &Value) -> bool {
    matches!(
        pod["status"]["phase"].as_str(),
        Some("Succeeded" | "Failed")
    )
}

pub(crate) async fn run(shared: Arc<Shared>) {
    let store = shared.store.clone();
    let Ok((_, mut rx)) = store.watch(None) else {
        return;
    };
    let mut running: HashMap<String, PodHandle> = HashMap::new();
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
                if ev.kind == "DELETED" {
                    if let Some(h) = running.remove(&uid) {
                        h.cancel.cancel();
                    }
                } else if let Some(h) = running.get(&uid) {
                    let s = signals_of(&ev.object);
                    h.signals.send_if_modified(|cur| {
                        let changed = *cur != s;
                        *cur = s;
                        changed
                    });
                } else if ev.kind == "ADDED" {
                    consider(&shared, &mut running, &ev.object);
                }
            }
            Ok(_) => {}
            Err(RecvError::Lagged(_)) => resync(&shared, &mut running),
            Err(RecvError::Closed) => return,
        }
    }
}

/// A pod the kubelet does not run yet: start it, or finish a deletion nobody else will.
fn consider(shared: &Arc<Shared>, running: &mut HashMap<String, PodHandle>, p: &Arc<Value>) {
    if p["metadata"]["deletionTimestamp"].is_string() {
        finish_deletion(&shared.store, p);
    } else if !terminal(p) {
        start_pod(shared, running, p);
    }
}

fn resync(shared: &Arc<Shared>, running: &mut HashMap<String, PodHandle>) {
    let (all, _) = shared.store.list(&pods(), None);
    let mut live = HashSet::new();
    for p in &all {
        let uid = p["metadata"]["uid"].as_str().unwrap_or("").to_string();
        live.insert(uid.clone());
        match running.get(&uid) {
            Some(h) => {
                let s = signals_of(p);
                h.signals.send_if_modified(|cur| {
                    let changed = *cur != s;
                    *cur = s;
                    changed
                });
            }
            None => consider(shared, running, p),
        }
    }
    running.retain(|uid, h| {
        if live.contains(uid) {
            true
        } else {
            h.cancel.cancel();
            false
        }
    });
}

/// The kubelet's final delete (grace period 0, uid precondition) once a pod's containers
/// stopped. Finalizers still hold it, as on a real cluster.
fn finish_deletion(store: &crate::store::Store, pod: &Value) {
    let ns = ns_of(pod);
    let name = name_of(pod);
    let same = store
        .get(&pods(), Some(ns), name)
        .is_some_and(|cur| cur["metadata"]["uid"] == pod["metadata"]["uid"]);
    if same {
        let _ = store.delete(&pods(), Some(ns), name);
    }
}

fn start_pod(shared: &Arc<Shared>, running: &mut HashMap<String, PodHandle>, pod: &Arc<Value>) {
    let uid = pod["metadata"]["uid"].as_str().unwrap_or("").to_string();
    let token = shared.cancel.child_token();
    let (tx, rx) = tokio::sync::watch::channel(signals_of(pod));
    running.insert(
        uid,
        PodHandle {
            cancel: token.clone(),
            signals: tx,
        },
    );
    let shared = shared.clone();
    let pod = pod.clone();
    tokio::spawn(async move {
        let ns = ns_of(&pod).to_string();
        let name = name_of(&pod).to_string();
        if let Err(e) = run_pod(shared, pod, token, rx).await {
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

/// The port the proxy's admin server binds: `LINKERD2_PROXY_ADMIN_LISTEN_ADDR` in the
/// proxy container's env (what linkerd2-proxy reads), else its `linkerd-admin` port,
/// else 4191.
/// Calico's annotation for a pod that asks for specific addresses (a JSON list).
pub const REQUESTED_IPS_ANNOTATION: &str = "cni.projectcalico.org/ipAddrs";

/// The loopback address a pod asks for with [`REQUESTED_IPS_ANNOTATION`], if any (the first
/// one; addresses outside 127.0.0.0/8 are ignored: the simulator only uses loopback).
pub fn requested_ip(pod: &Value) -> Option<Ipv4Addr> {
    let raw = pod["metadata"]["annotations"][REQUESTED_IPS_ANNOTATION].as_str()?;
    let ips: Vec<String> = serde_json::from_str(raw).ok()?;
    ips.first()?
        .parse::<Ipv4Addr>()
        .ok()
        .filter(|ip| ip.is_loopback())
}

pub fn proxy_admin_port(pod: &Value) -> u16 {
    let Some(c) = proxy_container(pod) else {
        return super::PROXY_ADMIN_PORT;
    };
    let from_env = c["env"].as_array().and_then(|env| {
        env.iter()
            .find(|e| e["name"] == "LINKERD2_PROXY_ADMIN_LISTEN_ADDR")
            .and_then(|e| e["value"].as_str())
            .and_then(|v| v.rsplit_once(':'))
            .and_then(|(_, p)| p.parse::<u16>().ok())
    });
    let from_port = || {
        c["ports"].as_array().and_then(|ps| {
            ps.iter()
                .find(|p| p["name"] == "linkerd-admin")
                .and_then(|p| p["containerPort"].as_u64())
                .and_then(|p| u16::try_from(p).ok())
        })
    };
    from_env
        .or_else(from_port)
        .unwrap_or(super::PROXY_ADMIN_PORT)
}

// === what a container runs ===

/// What a simulated container does once started, read from its `command` and `args`.
#[derive(Clone, Debug, PartialEq)]
pub enum Program {
    /// Serves until stopped (no command, or one the simulator does not model).
    Service,
    /// Runs for a while, then exits with a code.
    Finite { run_for: Duration, exit_code: i32 },
}

fn unquote(s: &str) -> &str {
    s.trim_matches(|c| c == '"' || c == '\'')
}

fn sleep_arg(a: &str) -> Option<Duration> {
    let a = unquote(a);
    if a == "infinity" {
        return None;
    }
    let (num, mult) = match a.chars().last() {
        Some('s') => (&a[..a.len() - 1], 1.0),
        Some('m') => (&a[..a.len() - 1], 60.0),
        Some('h') => (&a[..a.len() - 1], 3600.0),
        Some('d') => (&a[..a.len() - 1], 86400.0),
        _ => (a, 1.0),
    };
    let n: f64 = num.parse().ok()?;
    (n.is_finite() && n >= 0.0).then(|| Duration::from_secs_f64(n * mult))
}

/// Evaluates a shell script of `sleep N`, `exit N`, `true`, `false`, `:` and `echo`,
/// joined by `;`, `&&` or newlines. Anything else: a service.
fn script(s: &str) -> Program {
    let mut run_for = Duration::ZERO;
    let mut status = 0;
    let mut skip_and_chain = false;
    // Split keeping separators: ';' and '\n' end an and-chain, '&&' continues it.
    let mut rest = s;
    loop {
        let (cmd, sep, next) = match (rest.find("&&"), rest.find([';', '\n'])) {
            (Some(a), Some(b)) if a < b => (&rest[..a], "&&", &rest[a + 2..]),
            (Some(a), None) => (&rest[..a], "&&", &rest[a + 2..]),
            (_, Some(b)) => (&rest[..b], ";", &rest[b + 1..]),
            (None, None) => (rest, "", ""),
        };
        if cmd.contains("||") || cmd.contains('|') || cmd.contains('&') {
            return Program::Service;
        }
        let words: Vec<&str> = cmd.split_whitespace().collect();
        if !skip_and_chain && !words.is_empty() {
            match words[0] {
                "sleep" => match words.get(1).map(|a| sleep_arg(a)) {
                    Some(Some(d)) => {
                        run_for += d;
                        status = 0;
                    }
                    _ => return Program::Service,
                },
                "exit" => {
                    let code = words
                        .get(1)
                        .and_then(|c| unquote(c).parse::<i32>().ok())
                        .unwrap_or(status);
                    return Program::Finite {
                        run_for,
                        exit_code: code,
                    };
                }
                "true" | ":" | "echo" | "printf" | "date" | "env" => status = 0,
                "false" => status = 1,
                _ => return Program::Service,
            }
        }
        // A failing command skips the rest of its `&&` chain.
        skip_and_chain = match sep {
            "&&" => skip_and_chain || status != 0,
            _ => false,
        };
        if sep.is_empty() {
            break;
        }
        rest = next;
    }
    Program::Finite {
        run_for,
        exit_code: status,
    }
}

/// The program a container runs: `command` + `args` as a shell would (`sh -c SCRIPT` or a
/// single command such as `sleep 5`); no command at all is the image's server.
pub fn program(container: &Value) -> Program {
    let argv: Vec<String> = ["command", "args"]
        .iter()
        .filter_map(|k| container[*k].as_array())
        .flatten()
        .filter_map(|a| a.as_str().map(str::to_string))
        .collect();
    let Some(first) = argv.first() else {
        return Program::Service;
    };
    let base = first.rsplit('/').next().unwrap_or(first);
    if matches!(base, "sh" | "bash" | "ash" | "dash") {
        return match (argv.get(1).map(String::as_str), argv.get(2)) {
            (Some("-c"), Some(s)) => script(s),
            _ => Program::Service,
        };
    }
    script(&argv.join(" "))
}

/// How long a container's `preStop` hook takes (`sleep` action, or an `exec` that sleeps);
/// None when it never ends by itself.
fn pre_stop(container: &Value) -> Option<Duration> {
    let h = &container["lifecycle"]["preStop"];
    if let Some(s) = h["sleep"]["seconds"].as_u64() {
        return Some(Duration::from_secs(s));
    }
    if h["exec"].is_object() {
        return match program(&json!({"command": h["exec"]["command"]})) {
            Program::Finite { run_for, .. } => Some(run_for),
            Program::Service => None,
        };
    }
    Some(Duration::ZERO)
}

// === scheduling ===

fn tolerates(tolerations: &Value, taint: &Value) -> bool {
    tolerations.as_array().is_some_and(|ts| {
        ts.iter().any(|t| {
            let key_ok = match t["key"].as_str().filter(|k| !k.is_empty()) {
                Some(k) => taint["key"].as_str() == Some(k),
                None => t["operator"] == "Exists",
            };
            let value_ok = t["operator"] == "Exists"
                || t["value"].as_str().unwrap_or("") == taint["value"].as_str().unwrap_or("");
            let effect_ok = t["effect"]
                .as_str()
                .filter(|e| !e.is_empty())
                .is_none_or(|e| taint["effect"].as_str() == Some(e));
            key_ok && value_ok && effect_ok
        })
    })
}

fn requirement_matches(req: &Value, have: Option<&str>) -> bool {
    let vals: Vec<&str> = req["values"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    match req["operator"].as_str() {
        Some("In") => have.is_some_and(|h| vals.contains(&h)),
        Some("NotIn") => have.is_none_or(|h| !vals.contains(&h)),
        Some("Exists") => have.is_some(),
        Some("DoesNotExist") => have.is_none(),
        _ => false,
    }
}

/// Whether a pod with `spec` can go to `node`: untainted or tolerated, not cordoned,
/// `nodeSelector`, and required node affinity (`matchExpressions` on labels,
/// `matchFields` on `metadata.name`).
pub fn node_fits(node: &Value, spec: &Value) -> bool {
    let labels = &node["metadata"]["labels"];
    let tolerations = &spec["tolerations"];
    if node["spec"]["unschedulable"].as_bool() == Some(true)
        && !tolerates(
            tolerations,
            &json!({"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}),
        )
    {
        return false;
    }
    for taint in node["spec"]["taints"].as_array().into_iter().flatten() {
        if matches!(taint["effect"].as_str(), Some("NoSchedule" | "NoExecute"))
            && !tolerates(tolerations, taint)
        {
            return false;
        }
    }
    if let Some(sel) = spec["nodeSelector"].as_object() {
        if !sel.iter().all(|(k, v)| labels[k] == *v) {
            return false;
        }
    }
    let terms = &spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        ["nodeSelectorTerms"];
    if let Some(terms) = terms.as_array() {
        let name = name_of(node);
        let ok = terms.iter().any(|t| {
            t["matchExpressions"]
                .as_array()
                .into_iter()
                .flatten()
                .all(|r| requirement_matches(r, labels[r["key"].as_str().unwrap_or("")].as_str()))
                && t["matchFields"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .all(|r| r["key"] == "metadata.name" && requirement_matches(r, Some(name)))
        });
        if !ok {
            return false;
        }
    }
    true
}

fn node_ip(node: &Value) -> Option<Ipv4Addr> {
    node["status"]["addresses"]
        .as_array()?
        .iter()
        .find(|a| a["type"] == "InternalIP")?["address"]
        .as_str()?
        .parse()
        .ok()
}

/// The scheduler: no Nodes at all → the pod runs on the implicit node (no `nodeName`);
/// otherwise the next fitting Node in turn, or why none fits.
fn schedule(shared: &Shared, pod: &Value) -> Result<Option<(String, Option<Ipv4Addr>)>, String> {
    let (nodes, _) = shared.store.list(&super::nodes(), None);
    if let Some(n) = pod["spec"]["nodeName"].as_str().filter(|n| !n.is_empty()) {
        let ip = nodes
            .iter()
            .find(|x| name_of(x) == n)
            .and_then(|x| node_ip(x));
        return Ok(Some((n.to_string(), ip)));
    }
    if nodes.is_empty() {
        return Ok(None);
    }
    let fits: Vec<&Arc<Value>> = nodes
        .iter()
        .filter(|n| node_fits(n, &pod["spec"]))
        .collect();
    if fits.is_empty() {
        return Err(format!(
            "0/{} nodes are available: {} node(s) didn't match Pod's node affinity/selector or had untolerated taints. preemption: 0/{} nodes are available: {} Preemption is not helpful for scheduling.",
            nodes.len(),
            nodes.len(),
            nodes.len(),
            nodes.len()
        ));
    }
    let i = shared
        .next_node
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let n = fits[i % fits.len()];
    Ok(Some((name_of(n).to_string(), node_ip(n))))
}

// === a pod's runtime state ===

#[derive(Clone, Debug)]
enum CState {
    Waiting {
        reason: String,
        message: String,
    },
    Running {
        started_at: String,
    },
    Terminated {
        exit_code: i32,
        reason: String,
        started_at: String,
        finished_at: String,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    /// An application container (in `containers`).
    App,
    /// The Linkerd proxy (in `containers`, or a native sidecar in `initContainers`).
    Proxy,
    /// The identity controller's container in identity pods.
    Identity,
}

#[derive(Clone, Debug)]
struct ContainerRt {
    name: String,
    image: String,
    state: CState,
    ready: bool,
    restarts: u32,
    last_terminated: Option<Value>,
    role: Role,
    /// Native sidecar (`initContainers` with `restartPolicy: Always`).
    init: bool,
    program: Program,
    pre_stop: Option<Duration>,
    /// `cluster-sim.test/crash-loop`: exits at once every time it starts, never Ready.
    crash_loop: bool,
}

impl ContainerRt {
    fn finished(&self) -> bool {
        matches!(self.state, CState::Terminated { .. })
    }
    fn started_at(&self) -> String {
        match &self.state {
            CState::Running { started_at } | CState::Terminated { started_at, .. } => {
                started_at.clone()
            }
            CState::Waiting { .. } => now_rfc3339(),
        }
    }
    fn terminate(&mut self, exit_code: i32) {
        if self.finished() {
            return;
        }
        let started_at = self.started_at();
        self.state = CState::Terminated {
            exit_code,
            reason: if exit_code == 0 { "Completed" } else { "Error" }.into(),
            started_at,
            finished_at: now_rfc3339(),
        };
        self.ready = false;
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Phase {
    Pending,
    Running,
    Succeeded,
    Failed,
}

struct PodRt {
    ns: String,
    name: String,
    ip: Ipv4Addr,
    host_ip: Ipv4Addr,
    node: Option<String>,
    start_time: String,
    containers: Vec<ContainerRt>,
    phase: Phase,
    /// `Unschedulable` message while no Node fits.
    unschedulable: Option<String>,
    /// Node-pressure eviction message.
    evicted: Option<String>,
}

impl PodRt {
    fn set(&mut self, name: &str, f: impl FnOnce(&mut ContainerRt)) {
        if let Some(c) = self.containers.iter_mut().find(|c| c.name == name) {
            f(c);
        }
    }

    /// Regular containers all finished for good: the pod's terminal phase.
    fn outcome(&self) -> Option<Phase> {
        let regular: Vec<&ContainerRt> = self.containers.iter().filter(|c| !c.init).collect();
        if regular.is_empty() || !regular.iter().all(|c| c.finished()) {
            return None;
        }
        let failed = regular
            .iter()
            .any(|c| matches!(c.state, CState::Terminated { exit_code, .. } if exit_code != 0));
        Some(if failed {
            Phase::Failed
        } else {
            Phase::Succeeded
        })
    }

    fn status(&self) -> Value {
        let done = matches!(self.phase, Phase::Succeeded | Phase::Failed);
        let all_ready =
            !done && !self.containers.is_empty() && self.containers.iter().all(|c| c.ready);
        let now = now_rfc3339();
        let b = |x: bool| if x { "True" } else { "False" };
        let status_of = |c: &ContainerRt| {
            let state = match &c.state {
                CState::Waiting { reason, message } => {
                    json!({"waiting": {"reason": reason, "message": message}})
                }
                CState::Running { started_at } => json!({"running": {"startedAt": started_at}}),
                CState::Terminated {
                    exit_code,
                    reason,
                    started_at,
                    finished_at,
                } => json!({"terminated": {
                    "exitCode": exit_code, "reason": reason, "startedAt": started_at,
                    "finishedAt": finished_at,
                    "containerID": format!("sim://{}-{}-{}", self.name, c.name, started_at),
                }}),
            };
            let mut s = json!({
                "name": c.name, "image": c.image, "imageID": format!("sim://{}", c.image),
                "ready": c.ready, "started": matches!(c.state, CState::Running { .. }),
                "restartCount": c.restarts, "state": state,
            });
            if let CState::Running { started_at } = &c.state {
                s["containerID"] = json!(format!("sim://{}-{}-{}", self.name, c.name, started_at));
            }
            if let Some(lt) = &c.last_terminated {
                s["lastState"] = json!({"terminated": lt});
            }
            s
        };
        let statuses: Vec<Value> = self
            .containers
            .iter()
            .filter(|c| !c.init)
            .map(status_of)
            .collect();
        let init_statuses: Vec<Value> = self
            .containers
            .iter()
            .filter(|c| c.init)
            .map(status_of)
            .collect();
        let ip = self.ip.to_string();
        let host_ip = self.host_ip.to_string();
        let phase = match self.phase {
            Phase::Pending => "Pending",
            Phase::Running => "Running",
            Phase::Succeeded => "Succeeded",
            Phase::Failed => "Failed",
        };
        let mut ready = json!({"type": "Ready", "status": b(all_ready), "lastTransitionTime": now});
        let mut containers_ready =
            json!({"type": "ContainersReady", "status": b(all_ready), "lastTransitionTime": now});
        if done {
            ready["reason"] = json!("PodCompleted");
            containers_ready["reason"] = json!("PodCompleted");
        }
        let mut scheduled = json!({"type": "PodScheduled", "status": "True", "lastTransitionTime": self.start_time});
        if let Some(msg) = &self.unschedulable {
            scheduled = json!({"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": msg, "lastTransitionTime": self.start_time});
        }
        let mut conditions = vec![scheduled];
        if self.unschedulable.is_none() {
            conditions.push(json!({"type": "Initialized", "status": "True", "lastTransitionTime": self.start_time}));
            conditions.push(containers_ready);
            conditions.push(ready);
        }
        if let Some(msg) = &self.evicted {
            conditions.push(json!({"type": "DisruptionTarget", "status": "True", "reason": "TerminationByKubelet", "message": msg, "lastTransitionTime": now}));
        }
        let mut s = json!({
            "phase": phase,
            "startTime": self.start_time,
            "qosClass": "BestEffort",
            "conditions": conditions,
        });
        if self.unschedulable.is_none() {
            s["podIP"] = json!(ip);
            s["podIPs"] = json!([{"ip": ip}]);
            s["hostIP"] = json!(host_ip);
            s["hostIPs"] = json!([{"ip": host_ip}]);
            s["containerStatuses"] = json!(statuses);
            if !init_statuses.is_empty() {
                s["initContainerStatuses"] = json!(init_statuses);
            }
        }
        if let Some(msg) = &self.evicted {
            s["reason"] = json!("Evicted");
            s["message"] = json!(msg);
        }
        s
    }
}

/// Writes the pod's status (and, once, its `nodeName`). Conditions the kubelet does not
/// own (the eviction API's `DisruptionTarget`) are kept.
fn publish(shared: &Shared, rt: &Mutex<PodRt>) -> bool {
    write_status(&shared.store, rt)
}

/// [`publish`] on a store. Several tasks of one pod publish (the proxy, the identity
/// controller, finite app containers, the pod's own loop), so the status is read from the
/// runtime state inside the store's atomic update, as the kubelet's status manager always
/// syncs its latest status: the last write carries the newest state. A snapshot taken
/// before the write could land after a newer one and leave the pod unready for good.
/// (Nothing holds a pod's runtime lock while calling the store, so taking it under the
/// store's lock cannot deadlock.)
fn write_status(store: &crate::store::Store, rt: &Mutex<PodRt>) -> bool {
    let (ns, name) = {
        let rt = rt.lock().unwrap_or_else(|e| e.into_inner());
        (rt.ns.clone(), rt.name.clone())
    };
    let r = mutate_if_exists(store, &pods(), Some(&ns), &name, |o| {
        let (node, mut status) = {
            let rt = rt.lock().unwrap_or_else(|e| e.into_inner());
            (rt.node.clone(), rt.status())
        };
        if let (Some(old), Some(new)) = (
            o["status"]["conditions"].as_array(),
            status["conditions"].as_array_mut(),
        ) {
            // Keep transition times of conditions whose status did not change.
            for c in new.iter_mut() {
                if let Some(oc) = old.iter().find(|oc| oc["type"] == c["type"]) {
                    if oc["status"] == c["status"] {
                        c["lastTransitionTime"] = oc["lastTransitionTime"].clone();
                    }
                }
            }
            for oc in old {
                if !new.iter().any(|c| c["type"] == oc["type"]) && oc["type"] == "DisruptionTarget"
                {
                    new.push(oc.clone());
                }
            }
        }
        o["status"] = status;
        if let Some(n) = &node {
            if o["spec"]["nodeName"].as_str() != Some(n.as_str()) {
                o["spec"]["nodeName"] = json!(n);
            }
        }
        Ok(())
    });
    matches!(r, Ok(Some(_)))
}

fn restart_after(policy: &str, exit_code: i32) -> bool {
    match policy {
        "Never" => false,
        "OnFailure" => exit_code != 0,
        _ => true,
    }
}

/// Counts a meshed pod in the registry's gauge until dropped (the proxy stopped for good).
struct MeshedCount(Arc<Shared>);

impl MeshedCount {
    fn new(shared: &Arc<Shared>) -> Self {
        shared.proxies.meshed_pod_started();
        Self(shared.clone())
    }
}

impl Drop for MeshedCount {
    fn drop(&mut self) {
        self.0.proxies.meshed_pod_stopped();
    }
}

/// Releases the pod's IP when the pod's task ends.
struct IpGuard {
    shared: Arc<Shared>,
    ip: Ipv4Addr,
}

impl Drop for IpGuard {
    fn drop(&mut self) {
        self.shared.ips.release(self.ip);
    }
}

/// A running pod: its containers' tasks and the tokens that stop them.
struct PodTask {
    shared: Arc<Shared>,
    rt: Arc<Mutex<PodRt>>,
    ns: String,
    name: String,
    restart_policy: String,
    /// Stops the application containers' programs.
    apps: CancellationToken,
    /// Stops the identity controller (identity pods).
    identity: CancellationToken,
    /// Stops the proxy and its admin server.
    proxy: CancellationToken,
    /// The running proxy, once it started.
    proxy_up: Arc<Mutex<Option<Arc<Proxy>>>>,
    meshed: Option<MeshedCount>,
    /// Wakes the pod's main loop when an application container exits.
    exited: Arc<tokio::sync::Notify>,
}

impl PodTask {
    fn publish(&self) -> bool {
        publish(&self.shared, &self.rt)
    }

    /// Out of the Service's endpoints: identity takes no more CSRs here, the injector no
    /// more admissions.
    fn leave_endpoints(&self) {
        self.identity.cancel();
        if self.ns == super::LINKERD_NS {
            self.shared.bundle_view.injector_down(&self.name);
        }
    }

    /// The proxy exits: its admin port closes and it is no mTLS peer any more.
    fn stop_proxy(&mut self, exit_code: i32) {
        self.proxy.cancel();
        if let Some(p) = self
            .proxy_up
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            self.shared.proxies.remove_exact(&p);
        }
        if self.ns == super::LINKERD_NS {
            self.shared.bundle_view.injector_down(&self.name);
        }
        self.meshed = None;
        self.rt
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .set(super::PROXY_CONTAINER, |c| c.terminate(exit_code));
    }

    /// Starts the application containers; finite programs exit (and restart, per the
    /// pod's `restartPolicy`) on their own.
    fn start_apps(&self) {
        let started = now_rfc3339();
        let mut finite = Vec::new();
        {
            let mut r = self.rt.lock().unwrap_or_else(|e| e.into_inner());
            for c in r.containers.iter_mut().filter(|c| c.role == Role::App) {
                c.state = CState::Running {
                    started_at: started.clone(),
                };
                c.ready = !c.crash_loop;
                if let Program::Finite { run_for, exit_code } = c.program {
                    finite.push((c.name.clone(), run_for, exit_code));
                }
            }
        }
        for (name, run_for, exit_code) in finite {
            let shared = self.shared.clone();
            let rt = self.rt.clone();
            let cancel = self.apps.clone();
            let exited = self.exited.clone();
            let policy = self.restart_policy.clone();
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(run_for) => {}
                    }
                    let restart = restart_after(&policy, exit_code);
                    let restarts = {
                        let mut r = rt.lock().unwrap_or_else(|e| e.into_inner());
                        let mut n = 0;
                        r.set(&name, |c| {
                            c.terminate(exit_code);
                            n = c.restarts;
                        });
                        n
                    };
                    if !restart {
                        exited.notify_one();
                        publish(&shared, &rt);
                        return;
                    }
                    publish(&shared, &rt);
                    let backoff = shared.durations.crash_backoff * 2u32.pow(restarts.min(3));
                    {
                        let mut r = rt.lock().unwrap_or_else(|e| e.into_inner());
                        r.set(&name, |c| {
                            if let CState::Terminated { exit_code, reason, started_at, finished_at } = &c.state {
                                c.last_terminated = Some(json!({"exitCode": exit_code, "reason": reason, "startedAt": started_at, "finishedAt": finished_at}));
                            }
                            c.state = CState::Waiting {
                                reason: "CrashLoopBackOff".into(),
                                message: format!("back-off restarting failed container {name}"),
                            };
                        });
                    }
                    publish(&shared, &rt);
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    {
                        let mut r = rt.lock().unwrap_or_else(|e| e.into_inner());
                        r.set(&name, |c| {
                            c.restarts += 1;
                            c.state = CState::Running {
                                started_at: now_rfc3339(),
                            };
                            c.ready = !c.crash_loop;
                        });
                    }
                    publish(&shared, &rt);
                }
            });
        }
    }

    /// Graceful termination (`deletionTimestamp` set): the pod leaves its Services,
    /// `preStop` hooks run, the application containers get SIGTERM (and exit at once
    /// unless they ignore it: then SIGKILL when the grace period ends), the proxy
    /// serves until they are gone and exits last; then the kubelet deletes the pod.
    async fn terminate(&mut self, grace: i64, ignore_sigterm: bool, cancel: &CancellationToken) {
        self.leave_endpoints();
        let grace = Duration::from_secs(grace.max(0) as u64);
        let start = tokio::time::Instant::now();
        self.apps.cancel();
        let mut stops: Vec<(Duration, String, i32)> = {
            let r = self.rt.lock().unwrap_or_else(|e| e.into_inner());
            r.containers
                .iter()
                .filter(|c| c.role != Role::Proxy && !c.finished())
                .map(|c| {
                    let hook = c.pre_stop.unwrap_or(grace);
                    if ignore_sigterm || hook >= grace {
                        (grace, c.name.clone(), 137)
                    } else {
                        (hook, c.name.clone(), 0)
                    }
                })
                .collect()
        };
        stops.sort_by_key(|(d, _, _)| *d);
        for (at, name, code) in stops {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep_until(start + at) => {}
            }
            self.rt
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .set(&name, |c| c.terminate(code));
            self.publish();
        }
        self.stop_proxy(0);
        {
            let mut r = self.rt.lock().unwrap_or_else(|e| e.into_inner());
            let outcome = r.outcome().unwrap_or(Phase::Succeeded);
            r.phase = outcome;
        }
        self.publish();
    }

    /// Node-pressure eviction: every container killed at once, phase Failed, reason
    /// Evicted; the pod object stays.
    fn evict(&mut self, message: &str) {
        self.leave_endpoints();
        self.apps.cancel();
        self.stop_proxy(137);
        {
            let mut r = self.rt.lock().unwrap_or_else(|e| e.into_inner());
            for c in r.containers.iter_mut() {
                c.terminate(137);
            }
            r.phase = Phase::Failed;
            r.evicted = Some(message.to_string());
        }
        self.publish();
    }
}

impl Drop for PodTask {
    /// The pod's task ends (the pod is gone, or never ran): nothing of it keeps running.
    fn drop(&mut self) {
        self.apps.cancel();
        self.identity.cancel();
        self.proxy.cancel();
        if let Some(p) = self
            .proxy_up
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            self.shared.proxies.remove_exact(&p);
        }
        if self.ns == super::LINKERD_NS {
            self.shared.bundle_view.injector_down(&self.name);
        }
    }
}

fn container_rts(pod: &Value, is_identity: bool) -> Vec<ContainerRt> {
    let crash_loop = pod["metadata"]["annotations"][super::ANNOTATION_SIM_CRASH_LOOP]
        .as_str()
        .is_some_and(|v| v == "true");
    let mut out = Vec::new();
    for (key, init) in [("initContainers", true), ("containers", false)] {
        for c in pod["spec"][key].as_array().into_iter().flatten() {
            let name = c["name"].as_str().unwrap_or("").to_string();
            let is_proxy = name == super::PROXY_CONTAINER;
            // Init containers are done by the time the pod runs, but a native-sidecar proxy.
            if init && !is_proxy {
                continue;
            }
            let role = if is_proxy {
                Role::Proxy
            } else if is_identity && name == "identity" {
                Role::Identity
            } else {
                Role::App
            };
            out.push(ContainerRt {
                image: c["image"].as_str().unwrap_or("").to_string(),
                state: CState::Waiting {
                    reason: "ContainerCreating".into(),
                    message: String::new(),
                },
                ready: false,
                restarts: 0,
                last_terminated: None,
                role,
                init,
                program: match role {
                    Role::App if crash_loop => Program::Finite {
                        run_for: Duration::ZERO,
                        exit_code: 1,
                    },
                    Role::App => program(c),
                    _ => Program::Service,
                },
                pre_stop: pre_stop(c),
                crash_loop: crash_loop && role == Role::App,
                name,
            });
        }
    }
    out
}

async fn run_pod(
    shared: Arc<Shared>,
    pod: Arc<Value>,
    cancel: CancellationToken,
    mut signals: tokio::sync::watch::Receiver<Signals>,
) -> anyhow::Result<()> {
    let ns = ns_of(&pod).to_string();
    let name = name_of(&pod).to_string();
    let meshed = proxy_container(&pod).is_some();
    let component = pod["metadata"]["labels"][super::LABEL_COMPONENT]
        .as_str()
        .map(str::to_string);
    let is_identity = ns == super::LINKERD_NS && component.as_deref() == Some("identity");
    let restart_policy = pod["spec"]["restartPolicy"]
        .as_str()
        .unwrap_or("Always")
        .to_string();

    // Scheduling: wait (Pending, Unschedulable) until a Node fits.
    let placement = loop {
        match schedule(&shared, &pod) {
            Ok(p) => break p,
            Err(msg) => {
                let ip = Ipv4Addr::UNSPECIFIED;
                let rt = Mutex::new(PodRt {
                    ns: ns.clone(),
                    name: name.clone(),
                    ip,
                    host_ip: ip,
                    node: None,
                    start_time: now_rfc3339(),
                    containers: Vec::new(),
                    phase: Phase::Pending,
                    unschedulable: Some(msg),
                    evicted: None,
                });
                if !publish(&shared, &rt) {
                    return Ok(());
                }
                tokio::select! {
                    _ = cancel.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    };
    let admin_port = proxy_admin_port(&pod);
    let (ip, listener) = match requested_ip(&pod) {
        Some(ip) => (
            ip,
            shared
                .ips
                .claim(ip, meshed.then_some(admin_port), &shared.admin_ports)
                .await?,
        ),
        None if meshed => {
            let (ip, l) = shared
                .ips
                .allocate_bound(admin_port, &shared.admin_ports)
                .await?;
            (ip, Some(l))
        }
        None => (shared.ips.allocate(), None),
    };
    let _ip_guard = IpGuard {
        shared: shared.clone(),
        ip,
    };
    let (node, host_ip) = match placement {
        Some((n, hip)) => (Some(n), hip.unwrap_or(ip)),
        None => (None, ip),
    };
    let rt = Arc::new(Mutex::new(PodRt {
        ns: ns.clone(),
        name: name.clone(),
        ip,
        host_ip,
        node,
        start_time: now_rfc3339(),
        containers: container_rts(&pod, is_identity),
        phase: Phase::Pending,
        unschedulable: None,
        evicted: None,
    }));
    let mut task = PodTask {
        shared: shared.clone(),
        rt: rt.clone(),
        ns: ns.clone(),
        name: name.clone(),
        restart_policy,
        apps: cancel.child_token(),
        identity: cancel.child_token(),
        proxy: cancel.child_token(),
        proxy_up: Arc::default(),
        meshed: meshed.then(|| MeshedCount::new(&shared)),
        exited: Arc::default(),
    };
    // Holding the admitted pod for the pod's lifetime would keep a stale copy alive.
    drop(pod);
    if !task.publish() {
        return Ok(());
    }
    // Container start delay; a pod deleted or evicted meanwhile never starts.
    tokio::select! {
        _ = cancel.cancelled() => return Ok(()),
        _ = tokio::time::sleep(shared.durations.pod_start) => {}
        _ = signals.wait_for(|s| s.terminate.is_some() || s.evict.is_some()) => {}
    }
    let early = signals.borrow().clone();
    if let Some(msg) = early.evict {
        task.evict(&msg);
        return Ok(());
    }
    if early.terminate.is_some() {
        task.terminate(0, early.ignore_sigterm, &cancel).await;
        if let Some(cur) = shared.store.get(&pods(), Some(&ns), &name) {
            finish_deletion(&shared.store, &cur);
        }
        return Ok(());
    }
    let Some(current) = shared.store.get(&pods(), Some(&ns), &name) else {
        return Ok(());
    };
    let uid = current["metadata"]["uid"].clone();
    // What the proxy needs from the pod; the pod object itself is not kept.
    let proxy_spec = proxy_container(&current).cloned();
    let pod_ref = json!({
        "metadata": {"namespace": ns, "name": name, "labels": current["metadata"]["labels"]},
        "spec": {"serviceAccountName": current["spec"]["serviceAccountName"]},
    });
    drop(current);
    rt.lock().unwrap_or_else(|e| e.into_inner()).phase = Phase::Running;
    task.start_apps();
    if listener.is_none() {
        // Meshed pods publish once, with the proxy's state (one watch event less per pod).
        task.publish();
    }
    if is_identity {
        spawn_identity(&shared, &rt, &ns, &name, task.identity.clone());
    }
    if let (Some(listener), Some(pc)) = (listener, proxy_spec) {
        spawn_proxy(ProxyStart {
            shared: shared.clone(),
            rt: rt.clone(),
            listener,
            spec: pc,
            pod_ref,
            ip,
            ns: ns.clone(),
            name: name.clone(),
            component: component.clone(),
            cancel: task.proxy.clone(),
            up: task.proxy_up.clone(),
        });
    }
    // Until the pod ends: deleted (gracefully or not), evicted, or its containers finish.
    let mut finished = false;
    loop {
        if !finished {
            let outcome = rt.lock().unwrap_or_else(|e| e.into_inner()).outcome();
            if let Some(phase) = outcome {
                finished = true;
                // The pod is done: a native-sidecar proxy is stopped after the app.
                task.leave_endpoints();
                task.stop_proxy(0);
                rt.lock().unwrap_or_else(|e| e.into_inner()).phase = phase;
                task.publish();
            }
        }
        let s = signals.borrow_and_update().clone();
        if let Some(msg) = s.evict {
            if !finished {
                task.evict(&msg);
            }
            return Ok(());
        }
        if let Some(grace) = s.terminate {
            if !finished {
                task.terminate(grace, s.ignore_sigterm, &cancel).await;
            }
            if cancel.is_cancelled() {
                return Ok(());
            }
            finish_deletion(
                &shared.store,
                &json!({"metadata": {"namespace": ns, "name": name, "uid": uid}}),
            );
            return Ok(());
        }
        tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            r = signals.changed() => { if r.is_err() { return Ok(()); } }
            _ = task.exited.notified() => {}
        }
    }
}

fn spawn_identity(
    shared: &Arc<Shared>,
    rt: &Arc<Mutex<PodRt>>,
    ns: &str,
    name: &str,
    cancel: CancellationToken,
) {
    let shared2 = shared.clone();
    let rt2 = rt.clone();
    let (ns2, name2) = (ns.to_string(), name.to_string());
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
                    cancel.cancelled().await;
                    shared2.identity.deregister(&inst);
                    return;
                }
                Err(msg) => {
                    attempt += 1;
                    crash(&shared2, &rt2, "identity", attempt, &msg);
                    let backoff = shared2.durations.crash_backoff * 2u32.pow(attempt.min(3) - 1);
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                }
            }
        }
    });
}

struct ProxyStart {
    shared: Arc<Shared>,
    rt: Arc<Mutex<PodRt>>,
    listener: AdminListener,
    spec: Value,
    pod_ref: Value,
    ip: Ipv4Addr,
    ns: String,
    name: String,
    component: Option<String>,
    cancel: CancellationToken,
    up: Arc<Mutex<Option<Arc<Proxy>>>>,
}

/// The proxy container: env resolved at start (crash-looping while it cannot start), then
/// its admin server, certificate refresh and readiness.
fn spawn_proxy(p: ProxyStart) {
    tokio::spawn(async move {
        let ProxyStart {
            shared,
            rt,
            listener,
            spec,
            pod_ref,
            ip,
            ns,
            name,
            component,
            cancel,
            up,
        } = p;
        let mut attempt = 0u32;
        let proxy = loop {
            match resolve_env(&shared.store, &ns, &spec)
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
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                }
            }
        };
        if cancel.is_cancelled() {
            return;
        }
        let now = now_rfc3339();
        rt.lock()
            .unwrap_or_else(|e| e.into_inner())
            .set(super::PROXY_CONTAINER, |c| {
                c.state = CState::Running { started_at: now };
            });
        shared.proxies.insert(proxy.clone());
        *up.lock().unwrap_or_else(|e| e.into_inner()) = Some(proxy.clone());
        if cancel.is_cancelled() {
            // Stopped while starting: undo.
            shared.proxies.remove_exact(&proxy);
            return;
        }
        if let Err(e) = proxy::serve_admin(
            proxy.clone(),
            listener,
            shared.durations.proxy_admin_latency,
            cancel.clone(),
        ) {
            tracing::warn!(namespace = %ns, pod = %name, error = %e, "admin server failed");
            return;
        }
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
                _ = cancel.cancelled() => return,
                r = certified.wait_for(|c| *c) => { if r.is_err() { return; } }
            }
        }
        if cancel.is_cancelled() {
            return;
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
    });
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The interleaving behind a flaky `linkerd-identity not rolled out` hang: the proxy
    /// of an identity pod became ready and started publishing while the identity
    /// controller (not ready yet in its view) was about to become ready; the identity's
    /// publish wrote first and the proxy's older view of the pod landed last, so the
    /// pod stayed unready with nothing left to publish. The last write must carry the
    /// newest state.
    #[test]
    fn a_publish_racing_a_newer_one_does_not_leave_the_pod_unready() {
        let store = crate::store::Store::new();
        crate::api::builtin::install(&store).expect("built-in kinds");
        let pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "linkerd-identity-abc-x", "namespace": "linkerd"},
            "spec": {"containers": [
                {"name": "identity", "image": "cr.l5d.io/linkerd/controller:edge-sim"},
                {"name": super::super::PROXY_CONTAINER, "image": "cr.l5d.io/linkerd/proxy:edge-sim"},
            ]},
        });
        store.create(&pods(), pod.clone()).expect("pod");
        let ip = Ipv4Addr::new(127, 1, 2, 3);
        let rt = Arc::new(Mutex::new(PodRt {
            ns: "linkerd".into(),
            name: "linkerd-identity-abc-x".into(),
            ip,
            host_ip: ip,
            node: None,
            start_time: now_rfc3339(),
            containers: container_rts(&pod, true),
            phase: Phase::Running,
            unschedulable: None,
            evicted: None,
        }));
        let running = |c: &mut ContainerRt| {
            c.state = CState::Running {
                started_at: now_rfc3339(),
            };
            c.ready = true;
        };
        // The proxy is ready; the identity controller is not yet.
        rt.lock()
            .unwrap()
            .set(super::super::PROXY_CONTAINER, running);
        let mut proxy_publish = None;
        // The identity controller's publish holds the store (mid-write) while the proxy's
        // publish starts and waits for it; then the identity is ready and written first.
        store
            .mutate(&pods(), Some("linkerd"), "linkerd-identity-abc-x", |o| {
                let (store2, rt2) = (store.clone(), rt.clone());
                proxy_publish = Some(std::thread::spawn(move || write_status(&store2, &rt2)));
                std::thread::sleep(Duration::from_millis(200));
                let mut r = rt.lock().unwrap();
                r.set("identity", running);
                o["status"] = r.status();
                Ok(())
            })
            .expect("identity publish");
        assert!(proxy_publish.unwrap().join().unwrap(), "the pod exists");
        let p = store
            .get(&pods(), Some("linkerd"), "linkerd-identity-abc-x")
            .unwrap();
        assert!(
            super::super::workloads::pod_ready(&p),
            "both containers are ready, so the pod must be Ready: {:#}",
            p["status"]
        );
    }

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

    fn local_ports() -> AdminPorts {
        AdminPorts::new(&Default::default(), 0).expect("ports")
    }

    #[tokio::test]
    async fn a_requested_ip_is_claimed_once_and_free_again_when_released() {
        let a = IpAllocator::new(5);
        let ports = local_ports();
        let pod = json!({"metadata": {"annotations": {
            REQUESTED_IPS_ANNOTATION: "[\"127.77.0.9\"]"
        }}});
        let ip = requested_ip(&pod).expect("requested");
        assert_eq!(ip, Ipv4Addr::new(127, 77, 0, 9));
        assert!(a.claim(ip, None, &ports).await.is_ok());
        let e = a.claim(ip, None, &ports).await.err().expect("in use");
        assert!(e.to_string().contains("in use by another pod"), "{e}");
        a.release(ip);
        assert!(
            a.claim(ip, None, &ports).await.is_ok(),
            "free again once its pod is gone"
        );
        let elsewhere = json!({"metadata": {"annotations": {
            REQUESTED_IPS_ANNOTATION: "[\"10.0.0.5\"]"
        }}});
        assert_eq!(requested_ip(&elsewhere), None, "loopback only");
    }

    #[tokio::test]
    async fn a_second_simulator_skips_addresses_bound_by_the_first() {
        let ports = local_ports();
        let first = IpAllocator::new(9);
        let (ip, held) = first.allocate_bound(0, &ports).await.unwrap();
        let port = held.local_addr().unwrap().port();
        // Same seed, same starting point: the bound address is skipped.
        let second = IpAllocator::new(9);
        let (other, _l) = second.allocate_bound(port, &ports).await.unwrap();
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
    #[test]
    fn programs_from_command_and_args() {
        let p = |v: Value| program(&v);
        assert_eq!(p(json!({"name": "web"})), Program::Service);
        assert_eq!(
            p(json!({"command": ["sh", "-c", "echo start; sleep 3 && exit 2"]})),
            Program::Finite {
                run_for: Duration::from_secs(3),
                exit_code: 2
            }
        );
        assert_eq!(
            p(json!({"command": ["sleep"], "args": ["1.5"]})),
            Program::Finite {
                run_for: Duration::from_millis(1500),
                exit_code: 0
            }
        );
        assert_eq!(
            p(json!({"command": ["/bin/sh", "-c", "sleep 1; false"]})),
            Program::Finite {
                run_for: Duration::from_secs(1),
                exit_code: 1
            }
        );
        // A failing command skips the rest of its && chain, not what follows `;`.
        assert_eq!(
            p(json!({"command": ["sh", "-c", "false && sleep 9; sleep 2"]})),
            Program::Finite {
                run_for: Duration::from_secs(2),
                exit_code: 0
            }
        );
        assert_eq!(
            p(json!({"command": ["sleep", "infinity"]})),
            Program::Service
        );
        assert_eq!(
            p(json!({"command": ["/app/server", "--port", "80"]})),
            Program::Service
        );
        assert_eq!(
            p(json!({"command": ["sh", "-c", "run | tee log"]})),
            Program::Service
        );
        assert_eq!(
            pre_stop(&json!({"lifecycle": {"preStop": {"sleep": {"seconds": 20}}}})),
            Some(Duration::from_secs(20))
        );
        assert_eq!(
            pre_stop(&json!({"lifecycle": {"preStop": {"exec": {"command": ["sleep", "5"]}}}})),
            Some(Duration::from_secs(5))
        );
        assert_eq!(pre_stop(&json!({})), Some(Duration::ZERO));
    }

    #[test]
    fn nodes_fit_by_taints_selector_and_affinity() {
        let node = json!({
            "metadata": {"name": "n1", "labels": {"zone": "a"}},
            "spec": {"taints": [{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]},
        });
        assert!(!node_fits(&node, &json!({})), "untolerated taint");
        let tol = json!([{"key": "dedicated", "operator": "Equal", "value": "db", "effect": "NoSchedule"}]);
        assert!(node_fits(&node, &json!({"tolerations": tol})));
        assert!(node_fits(
            &node,
            &json!({"tolerations": [{"operator": "Exists"}]})
        ));
        assert!(!node_fits(
            &node,
            &json!({"tolerations": tol, "nodeSelector": {"zone": "b"}})
        ));
        let pinned = |n: &str| json!({"tolerations": tol, "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": [n]}]}]}}}});
        assert!(node_fits(&node, &pinned("n1")));
        assert!(!node_fits(&node, &pinned("n2")));
        let cordoned = json!({"metadata": {"name": "n2"}, "spec": {"unschedulable": true}});
        assert!(!node_fits(&cordoned, &json!({})));
    }

    #[test]
    fn admin_port_from_env_then_port_then_default() {
        let pod = |c: Value| json!({"spec": {"containers": [c]}});
        assert_eq!(proxy_admin_port(&json!({"spec": {}})), 4191);
        assert_eq!(
            proxy_admin_port(&pod(
                json!({"name": "linkerd-proxy", "ports": [{"name": "linkerd-admin", "containerPort": 9995}]})
            )),
            9995
        );
        assert_eq!(
            proxy_admin_port(&pod(
                json!({"name": "linkerd-proxy", "env": [{"name": "LINKERD2_PROXY_ADMIN_LISTEN_ADDR", "value": "0.0.0.0:9990"}], "ports": [{"name": "linkerd-admin", "containerPort": 9995}]})
            )),
            9990
        );
    }
}
