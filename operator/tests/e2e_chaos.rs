//! Chaos with two operator replicas on the cluster simulator, through the real binary: the
//! leader is killed (SIGKILL), or frozen (SIGSTOP, then SIGCONT once the standby took over),
//! in every step of a rotation the guide's person drives; one run adds a standby whose wall
//! clock is 30 s ahead (libfaketime) and API faults on 10% of the operator's writes.
//!
//! Every case asserts what a platform team relies on:
//! - at most one replica writes at any time: each replica talks through its own recording
//!   proxy, and after a leader is disrupted only its successor writes, and not before the
//!   old Lease expired;
//! - the rotation completes with the new root alone;
//! - the mTLS oracle never saw a failed handshake (minimum 1.0);
//! - no step's side effect is repeated: each control-plane Deployment is restarted exactly
//!   three times, the bundle goes old → old+new → new and the previous-anchor copy goes
//!   old → new;
//! - a second TrustAnchorRotation is refused by the API server in every phase.

mod common;

use common::recorder::{Recorded, Recorder};
use common::*;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, PostParams};
use kube::runtime::watcher::{self, watcher};
use kube::runtime::WatchStreamExt;
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use trust_rotation_crds::{Phase, TrustAnchorRotation, TrustAnchorRotationSpec};

/// Generous: every step may lose a lease's worth of time to a change of leader, and the
/// machine may be busy with other tests.
const T: Duration = Duration::from_secs(120);
/// The tests' `--lease-duration` (`common::Operator`'s default).
const LEASE: Duration = Duration::from_secs(2);

#[derive(Clone, Copy, Debug, PartialEq)]
enum Disruption {
    Kill,
    Stop,
}

/// One replica: its recording proxy, its environment and the process running now.
struct Slot {
    prefix: &'static str,
    rec: Recorder,
    env: Vec<(&'static str, String)>,
    op: Option<Operator>,
}

impl Slot {
    async fn new(sim: &cluster_sim::Sim, name: &'static str, prefix: &'static str) -> Slot {
        Slot {
            prefix,
            rec: Recorder::start(sim.kubeconfig_path()).await,
            env: vec![("POD_NAME", name.to_string())],
            op: None,
        }
    }

    fn spawn(&mut self) {
        self.op = Some(Operator::spawn(self.rec.kubeconfig(), &self.env));
    }

    fn writes(&self) -> Vec<Recorded> {
        self.rec
            .log()
            .into_iter()
            .filter(|r| r.is_write() && !r.is_lease())
            .collect()
    }
}

/// One disruption of the leader.
#[derive(Debug)]
struct Hit {
    step: String,
    at: Instant,
    leader: usize,
    took_over_at: Instant,
    /// When the disrupted replica ran again: SIGCONT, or a new process in its place.
    back_at: Instant,
}

async fn leader_slot(client: &kube::Client, prefixes: [&str; 2]) -> usize {
    let deadline = Instant::now() + T;
    loop {
        if let Some(h) = lease_holder(client).await {
            if let Some(i) = prefixes.iter().position(|p| h.starts_with(p)) {
                return i;
            }
        }
        assert!(Instant::now() < deadline, "no replica took the Lease");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Disrupts the leader once in every step of the rotation, until `done`.
async fn chaos(
    client: kube::Client,
    slots: Arc<tokio::sync::Mutex<[Slot; 2]>>,
    how: Disruption,
    done: Arc<std::sync::atomic::AtomicBool>,
) -> Vec<Hit> {
    let prefixes = {
        let s = slots.lock().await;
        [s[0].prefix, s[1].prefix]
    };
    let mut hits: Vec<Hit> = Vec::new();
    while !done.load(std::sync::atomic::Ordering::SeqCst) {
        let s = status(&client).await;
        let step = match (&s.rotation, s.current_step) {
            (Some(_), Some(step)) if !hits.iter().any(|h| h.step == step) => step,
            _ => {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let leader = leader_slot(&client, prefixes).await;
        let successor = 1 - leader;
        let mut s = slots.lock().await;
        let at = Instant::now();
        match how {
            Disruption::Kill => {
                if let Some(op) = s[leader].op.take() {
                    op.kill().await;
                }
            }
            Disruption::Stop => s[leader].op.as_ref().expect("running").signal("STOP"),
        }
        let took_over_at = wait_holder(&client, prefixes[successor]).await;
        match how {
            // A new process in the same place, as a Deployment would start one.
            Disruption::Kill => s[leader].spawn(),
            Disruption::Stop => s[leader].op.as_ref().expect("running").signal("CONT"),
        }
        let back_at = Instant::now();
        eprintln!(
            "chaos: {how:?} the leader ({}) in {step}; {} took over {:?} later",
            prefixes[leader],
            prefixes[successor],
            took_over_at - at
        );
        hits.push(Hit {
            step,
            at,
            leader,
            took_over_at,
            back_at,
        });
    }
    hits
}

/// Every distinct value `f` gives the watched object, in order.
fn record<K>(
    api: Api<K>,
    name: &str,
    f: impl Fn(&K) -> Option<String> + Send + 'static,
) -> Arc<Mutex<Vec<String>>>
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
{
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let out = seen.clone();
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    tokio::spawn(async move {
        let mut stream = watcher(api, config)
            .default_backoff()
            .applied_objects()
            .boxed();
        while let Some(Ok(obj)) = stream.next().await {
            if let Some(v) = f(&obj) {
                let mut seen = out.lock().unwrap();
                if seen.last() != Some(&v) {
                    seen.push(v);
                }
            }
        }
    });
    seen
}

fn bundle_of(cm: &ConfigMap) -> Option<String> {
    let pem = cm.data.as_ref()?.get("ca-bundle.crt")?;
    let b = trust_rotation_steps::bundle::Bundle::parse(pem).ok()?;
    Some(b.fingerprints().join(","))
}

fn previous_anchor_of(s: &Secret) -> Option<String> {
    let der = s.data.as_ref()?.get("tls.crt")?;
    let pem = std::str::from_utf8(&der.0).ok()?;
    let b = trust_rotation_steps::bundle::Bundle::parse(pem).ok()?;
    Some(b.fingerprints().join(","))
}

/// What the person would try by mistake in every phase: a second rotation. The CRD's rule
/// admits only `cluster`, so the API server refuses it.
async fn second_rotation_is_refused(client: &kube::Client, phase: &str) {
    let api: Api<TrustAnchorRotation> = Api::all(client.clone());
    let tar = TrustAnchorRotation::new("mesh-b", TrustAnchorRotationSpec::default());
    match api.create(&PostParams::default(), &tar).await {
        Err(kube::Error::Api(s)) if s.code == 422 => {
            assert!(s.message.contains("cluster"), "{phase}: {}", s.message);
        }
        other => panic!("{phase}: a second TrustAnchorRotation was not refused: {other:?}"),
    }
}

/// The guide's person: trigger, restart, renew the issuer, restart twice; a second rotation
/// tried in every phase. Returns (old anchor, new anchor).
async fn drive(client: &kube::Client) -> (String, String) {
    let namespaces = workload_namespaces(client).await;
    let old = secret_cert_fingerprint(client, "cert-manager", "linkerd-trust-anchor").await;
    second_rotation_is_refused(client, "Synced").await;
    cmctl_renew(client, "cert-manager", "linkerd-trust-anchor").await;
    wait_phase(client, Phase::PropagatingTrustRoots, "AwaitPropagation", T).await;
    second_rotation_is_refused(client, "PropagatingTrustRoots").await;
    restart_data_plane(client, &namespaces).await;
    wait_phase(client, Phase::WaitingForIdentityRotation, "AwaitIssuer", T).await;
    second_rotation_is_refused(client, "WaitingForIdentityRotation").await;
    cmctl_renew(client, "linkerd", "linkerd-identity-issuer").await;
    wait_phase(client, Phase::RenewingWorkloadCerts, "AccelerateRefresh", T).await;
    second_rotation_is_refused(client, "RenewingWorkloadCerts").await;
    restart_data_plane(client, &namespaces).await;
    wait_phase(
        client,
        Phase::RemovingOldTrustRoots,
        "AwaitPropagationReduced",
        T,
    )
    .await;
    second_rotation_is_refused(client, "RemovingOldTrustRoots").await;
    restart_data_plane(client, &namespaces).await;
    wait_status(client, "Synced", T, |s| {
        s.phase == Some(Phase::Synced) && s.rotation.is_none()
    })
    .await;
    let new = secret_cert_fingerprint(client, "cert-manager", "linkerd-trust-anchor").await;
    (old, new)
}

/// Runs one rotation with two replicas while the leader is disrupted in every step, then
/// asserts the invariants of the module docs. `skewed_standby` starts the second replica
/// with its wall clock 30 s ahead; `faults` makes 10% of the operator's writes fail.
async fn rotation_under_chaos(how: Disruption, skewed_standby: bool, faults: bool) {
    let sim = start_sim().await;
    let client = sim.client();
    let mut a = Slot::new(&sim, "replica-a", "replica-a-").await;
    let mut b = Slot::new(&sim, "replica-b", "replica-b-").await;
    a.spawn();
    a.op.as_ref().expect("a").wait_ready().await;
    wait_holder(&client, "replica-a-").await;
    if skewed_standby {
        assert!(
            std::path::Path::new(LIBFAKETIME).exists(),
            "{LIBFAKETIME} is missing: install Debian's faketime package (make test does)"
        );
        b.env.push(("LD_PRELOAD", LIBFAKETIME.to_string()));
        b.env.push(("FAKETIME", "+30s".to_string()));
    }
    b.spawn();
    b.op.as_ref().expect("b").wait_ready().await;
    wait_status(&client, "Synced", T, |s| s.phase == Some(Phase::Synced)).await;
    assert!(b.writes().is_empty(), "the standby wrote: {:?}", b.writes());

    let gens = futures::future::join_all(
        CONTROL_PLANE
            .iter()
            .map(|d| deployment_generation(&client, "linkerd", d)),
    )
    .await;
    let bundles = record(
        Api::<ConfigMap>::namespaced(client.clone(), "linkerd"),
        "linkerd-identity-trust-roots",
        bundle_of,
    );
    let copies = record(
        Api::<Secret>::namespaced(client.clone(), "cert-manager"),
        "linkerd-previous-anchor",
        previous_anchor_of,
    );
    let markers: Vec<_> = CONTROL_PLANE
        .iter()
        .map(|d| {
            record(
                Api::<Deployment>::namespaced(client.clone(), "linkerd"),
                d,
                |d: &Deployment| {
                    d.spec
                        .template
                        .metadata
                        .as_ref()?
                        .annotations
                        .as_ref()?
                        .get("trust.linkerd.io/restarted-for")
                        .cloned()
                },
            )
        })
        .collect();
    sim.oracle().reset();
    if faults {
        let rule = |s: &str| {
            cluster_sim::ErrorRule::parse(s)
                .expect("rule")
                .for_client("trust-rotation-operator")
        };
        // 10% of the operator's writes, Lease renewals included, fail: a 500, a 409 and a
        // 429 (with Retry-After) in equal shares.
        sim.faults().set(cluster_sim::FaultConfig {
            errors: vec![
                rule("write:*:500:0.034"),
                rule("write:*:409:0.034"),
                rule("write:*:429:0.034:1"),
            ],
            ..Default::default()
        });
    }

    let started = Instant::now();
    let slots = Arc::new(tokio::sync::Mutex::new([a, b]));
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let chaos = tokio::spawn(chaos(client.clone(), slots.clone(), how, done.clone()));
    let (old, new) = drive(&client).await;
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let hits = chaos.await.expect("the chaos task");
    sim.faults().set(Default::default());
    let ended = Instant::now();
    eprintln!(
        "rotation under {how:?} took {:?}, {} disruptions",
        ended - started,
        hits.len()
    );

    // The leader was disrupted in every step the rotation went through.
    let hit_steps: BTreeSet<&str> = hits.iter().map(|h| h.step.as_str()).collect();
    for step in [
        "AwaitPropagation",
        "AwaitIssuer",
        "AccelerateRefresh",
        "AwaitPropagationReduced",
    ] {
        assert!(
            hit_steps.contains(step),
            "no disruption in {step}: {hits:?}"
        );
    }
    assert!(hits.len() >= 6, "{hits:?}");

    let slots = slots.lock().await;
    let writes: [Vec<Recorded>; 2] = [slots[0].writes(), slots[1].writes()];
    // At most one writer at a time: after each disruption, until the next, only the
    // successor writes, and only once the disrupted leader's Lease expired.
    for (i, hit) in hits.iter().enumerate() {
        let until = hits.get(i + 1).map_or(ended, |h| h.at);
        // Once it runs again (resumed, or a new process in its place) it is a standby. (A
        // request it had handed to the kernel before the signal may reach the proxy after
        // it, so the time in between is not judged.)
        let old_leader: Vec<_> = writes[hit.leader]
            .iter()
            .filter(|r| r.at > hit.back_at && r.at <= until)
            .collect();
        assert!(
            old_leader.is_empty(),
            "the disrupted leader {} wrote again after it ran again in {}: {old_leader:?}",
            slots[hit.leader].prefix,
            hit.step
        );
        let early: Vec<_> = writes[1 - hit.leader]
            .iter()
            .filter(|r| r.at > hit.at && r.at < hit.at + LEASE - Duration::from_millis(500))
            .collect();
        assert!(
            early.is_empty(),
            "{} wrote before the disrupted leader's Lease expired in {}: {early:?}",
            slots[1 - hit.leader].prefix,
            hit.step
        );
        // Judged on the successor's own clock from when it saw the last renewal, not by
        // comparing wall clocks: a standby 30 s ahead takes over after one lease (about 2 s
        // here), and the other replica from it too. Comparing wall clocks would take 30 s
        // or never; the bound leaves room for a loaded machine.
        assert!(
            hit.took_over_at - hit.at < Duration::from_secs(20),
            "{} took {:?} to take over in {}",
            slots[1 - hit.leader].prefix,
            hit.took_over_at - hit.at,
            hit.step
        );
    }

    // The rotation completed, mTLS held, and nothing was done twice.
    assert_ne!(old, new);
    assert_eq!(
        bundle_fingerprints(&client).await,
        std::slice::from_ref(&new)
    );
    let min = sim.oracle().min_ratio();
    assert!(min >= 1.0, "mTLS success ratio fell to {min}");
    for (i, d) in CONTROL_PLANE.iter().enumerate() {
        assert_eq!(
            deployment_generation(&client, "linkerd", d).await,
            gens[i] + 3,
            "{d} restarted exactly three times"
        );
        let m = markers[i].lock().unwrap().clone();
        assert_eq!(m.len(), 3, "{d}'s restart markers: {m:?}");
    }
    assert_eq!(
        *bundles.lock().unwrap(),
        [old.clone(), format!("{old},{new}"), new.clone()],
        "the bundle went old, old+new, new, once each"
    );
    // CopyPreviousAnchor keeps the old root; ReduceBundle realigns the copy on the new one.
    assert_eq!(
        *copies.lock().unwrap(),
        [old.clone(), new.clone()],
        "the previous anchor was copied once, then realigned once"
    );
    if faults {
        let injected = sim.metrics().render(sim.store());
        assert!(
            injected
                .lines()
                .any(|l| l.contains("user_agent=\"trust-rotation-operator\"")
                    && (l.contains("code=\"500\"") || l.contains("code=\"409\""))),
            "no fault reached the operator:\n{injected}"
        );
    }
    drop(slots);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_killed_in_every_step_hands_over_once_and_the_rotation_completes() {
    rotation_under_chaos(Disruption::Kill, false, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_leader_skewed_standby_and_failing_writes_never_give_two_writers() {
    rotation_under_chaos(Disruption::Stop, true, true).await;
}

/// libfaketime does move the replica's wall clock: while the skewed replica holds the
/// Lease, the renewTime it writes is 30 s ahead of ours (so the chaos run above really has
/// a replica with a skewed clock).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_under_libfaketime_writes_times_thirty_seconds_ahead() {
    let sim = start_sim().await;
    let client = sim.client();
    let op = Operator::spawn(
        sim.kubeconfig_path(),
        &[
            ("POD_NAME", "skewed".to_string()),
            ("LD_PRELOAD", LIBFAKETIME.to_string()),
            ("FAKETIME", "+30s".to_string()),
        ],
    );
    op.wait_ready().await;
    wait_holder(&client, "skewed-").await;
    let renew = operator_lease(&client)
        .await
        .and_then(|l| l.spec)
        .and_then(|s| s.renew_time)
        .expect("a renewTime");
    let ahead = renew.0.duration_since(jiff::Timestamp::now());
    assert!(
        ahead.as_secs_f64() > 25.0 && ahead.as_secs_f64() < 35.0,
        "renewTime is {ahead:?} from now"
    );
    op.kill().await;
    sim.shutdown().await;
}
