//! What waiting steps remember of their probes, so that a step that looks every few seconds
//! probes only the pods whose answer can have changed.
//!
//! A proxy's certificate changes only when the proxy renews it or starts again. So, per pod:
//! - a new pod, a restarted proxy container or a new pod IP (a new *incarnation*) is probed;
//! - an answer the caller calls *settled* (a certificate from the active issuer: it never goes
//!   back) is kept while the incarnation lasts;
//! - any other answer (an old issuer, unreachable, timed out, invalid) is probed again after a
//!   backoff that starts at `first` and doubles each time the answer comes back the same, up to
//!   `max` (the refresh interval: a proxy renews within it); a different answer resets it.
//!
//! Answers are recorded as they arrive ([`ProbeCache::record`] from the probe's judge), so a
//! look cut short by the step's timeout still keeps what it learned.
//!
//! The cache only decides *when* to probe. Judging stays with the caller, on every look, so a
//! cached answer is judged afresh against the issuer of the moment.

use crate::observe::{MeshedPod, PodRef};
use crate::probe::{probe_pods, ProbeConfig, ProbeOutcome};
use jiff::Timestamp;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// When to probe a pod again whose answer is not settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub first: Duration,
    pub max: Duration,
}

/// What makes a pod's answer new: the pod, its proxy container's start, its IP, and its
/// readiness (a proxy becomes ready once it holds its certificate, so an answer taken just
/// before is stale the moment the pod turns Ready: waiting out the backoff would delay the
/// last pod's verdict, and with it the next phase).
///
/// [`Incarnation::is`] is the one comparison (a look asks it of every pod without copying).
#[derive(Debug, Clone)]
struct Incarnation {
    created_at: Option<Timestamp>,
    proxy_started_at: Option<Timestamp>,
    ip: Option<String>,
    admin_port: u16,
    ready: bool,
}

impl Incarnation {
    fn of(p: &MeshedPod) -> Self {
        Self {
            created_at: p.created_at,
            proxy_started_at: p.proxy_started_at,
            ip: p.ip.clone(),
            admin_port: p.admin_port,
            ready: p.ready,
        }
    }

    /// Whether `p` is this incarnation (without copying its IP: a look asks this of every pod).
    fn is(&self, p: &MeshedPod) -> bool {
        self.created_at == p.created_at
            && self.proxy_started_at == p.proxy_started_at
            && self.ip == p.ip
            && self.admin_port == p.admin_port
            && self.ready == p.ready
    }
}

#[derive(Debug, Clone)]
struct Entry {
    incarnation: Incarnation,
    outcome: ProbeOutcome,
    probed_at: Instant,
    /// How long after `probed_at` an unsettled answer is probed again.
    wait: Duration,
}

/// The remembered answers of one waiting step. Cloning shares the memory.
#[derive(Clone, Debug, Default)]
pub struct ProbeCache {
    entries: Arc<Mutex<HashMap<PodRef, Entry>>>,
}

/// One look's plan: answers still good, and the pods to probe now.
#[derive(Debug)]
pub struct Plan {
    pub cached: Vec<(MeshedPod, ProbeOutcome)>,
    pub probe: Vec<MeshedPod>,
}

impl Backoff {
    /// A waiting step's: from its poll interval, up to the workload-certificate refresh
    /// interval (a proxy renews within it) but at most 30 s, so that a person's fix is seen
    /// within half a minute.
    pub fn for_refresh_interval(poll: Duration, refresh_interval: &str) -> Self {
        let interval = trust_rotation_crds::parse_proxy_duration(refresh_interval)
            .unwrap_or(Duration::from_secs(300));
        Self {
            first: poll,
            max: interval.min(Duration::from_secs(30)).max(poll),
        }
    }
}

impl ProbeCache {
    /// Splits `pods` into cached answers and pods due for a probe at `now`; forgets pods
    /// that are gone. `settled` says which answers can no longer change.
    pub fn plan(
        &self,
        pods: Vec<MeshedPod>,
        now: Instant,
        settled: impl Fn(&ProbeOutcome) -> bool,
    ) -> Plan {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let present: std::collections::HashSet<&PodRef> = pods.iter().map(|p| &p.pod).collect();
        entries.retain(|k, _| present.contains(k));
        let mut plan = Plan {
            cached: Vec::new(),
            probe: Vec::new(),
        };
        for p in pods {
            match entries.get(&p.pod) {
                Some(e)
                    if e.incarnation.is(&p)
                        && (settled(&e.outcome) || now < e.probed_at + e.wait) =>
                {
                    plan.cached.push((p, e.outcome.clone()));
                }
                _ => plan.probe.push(p),
            }
        }
        plan
    }

    /// Forgets every answer: the step no longer waits on them.
    pub fn clear(&self) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        *entries = HashMap::new();
    }

    /// Records an answer as it arrives: the same answer as last time for the same
    /// incarnation doubles the wait before the next probe; anything new resets it.
    pub fn record(&self, pod: &MeshedPod, outcome: &ProbeOutcome, now: Instant, backoff: Backoff) {
        let remembered = outcome.remembered();
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let wait = match entries.get(&pod.pod) {
            Some(e) if e.incarnation.is(pod) && e.outcome == *outcome => {
                (e.wait * 2).min(backoff.max)
            }
            _ => backoff.first.min(backoff.max),
        };
        entries.insert(
            pod.pod.clone(),
            Entry {
                incarnation: Incarnation::of(pod),
                outcome: remembered,
                probed_at: now,
                wait,
            },
        );
    }
}

/// What one look saw: the answers remembered from earlier looks and the ones just probed.
pub struct Look {
    pub remembered: Vec<(MeshedPod, ProbeOutcome)>,
    pub fresh: Vec<(MeshedPod, ProbeOutcome)>,
}

impl Look {
    /// How many pods the look probed.
    pub fn probed(&self) -> usize {
        self.fresh.len()
    }

    /// Every pod with its answer, remembered or fresh.
    pub fn answers(self) -> Vec<(MeshedPod, ProbeOutcome)> {
        let mut answers = self.remembered;
        answers.extend(self.fresh);
        answers
    }

    /// The answers, with a yes resting on fresh answers only: when every answer is settled
    /// but some came from memory, those pods are probed again now (the ones probed during the
    /// look are not probed twice). What a step needs that acts once every proxy says yes.
    pub async fn confirmed(
        self,
        client: &kube::Client,
        cfg: &ProbeConfig,
        cache: &ProbeCache,
        settled: impl Fn(&ProbeOutcome) -> bool,
        backoff: Backoff,
    ) -> Vec<(MeshedPod, ProbeOutcome)> {
        let Look { remembered, fresh } = self;
        let all_settled = remembered.iter().chain(&fresh).all(|(_, o)| settled(o));
        if !all_settled || remembered.is_empty() {
            return Look { remembered, fresh }.answers();
        }
        let pods = remembered.into_iter().map(|(p, _)| p).collect();
        let mut answers = sweep(client, cfg, cache, pods, backoff).await;
        answers.extend(fresh);
        answers
    }
}

/// One look at `pods` through `cache`: probes the pods that are due (recording each answer
/// as it arrives) and returns every pod with its answer, remembered or fresh.
pub async fn look(
    client: &kube::Client,
    cfg: &ProbeConfig,
    cache: &ProbeCache,
    pods: Vec<MeshedPod>,
    settled: impl Fn(&ProbeOutcome) -> bool,
    backoff: Backoff,
) -> Look {
    let Plan { cached, probe } = cache.plan(pods, Instant::now(), settled);
    Look {
        remembered: cached,
        fresh: sweep(client, cfg, cache, probe, backoff).await,
    }
}

/// Probes every one of `pods` now, recording each answer in `cache` as it arrives. Answers
/// come back as remembered ([`ProbeOutcome::remembered`]): a leaf its issuer vouches for drops
/// its DER as soon as it is judged, not when the look ends (a sweep of 50,000 proxies held
/// every presented leaf at once).
pub async fn sweep(
    client: &kube::Client,
    cfg: &ProbeConfig,
    cache: &ProbeCache,
    pods: Vec<MeshedPod>,
    backoff: Backoff,
) -> Vec<(MeshedPod, ProbeOutcome)> {
    let memory = cache.clone();
    probe_pods(
        client,
        pods,
        cfg,
        |o| o.remembered(),
        move |p, o| memory.record(p, o, Instant::now(), backoff),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rotation::propagation::tests::pod;

    const B: Backoff = Backoff {
        first: Duration::from_secs(2),
        max: Duration::from_secs(60),
    };

    fn probed(plan: &Plan) -> Vec<String> {
        plan.probe.iter().map(|p| p.pod.to_string()).collect()
    }

    fn good() -> ProbeOutcome {
        ProbeOutcome::Chain(Vec::new())
    }

    fn settled(o: &ProbeOutcome) -> bool {
        matches!(o, ProbeOutcome::Chain(_))
    }

    /// A remembered chain keeps its leaf without the DER (most of a pod's memory at 50,000
    /// pods), answers as the fresh one does, and counts as the same answer when it comes back.
    #[test]
    fn a_remembered_leaf_drops_its_der_and_still_answers() {
        use crate::pki::testing::{issued, root, workload};
        let r = root("root");
        let (issuer, other) = (issued("issuer", &r, true), issued("other", &r, true));
        let leaf = workload("web.emojivoto.serviceaccount", &issuer, false);
        let presented = ProbeOutcome::Chain(vec![leaf.parsed(), issuer.parsed()]);
        let p = crate::probe::tests::pod("web", Some(crate::probe::tests::loopback(60)));
        let cache = ProbeCache::default();
        let t0 = Instant::now();
        let unsettled = |_: &ProbeOutcome| false;
        cache.record(&p, &presented, t0, B);
        cache.record(&p, &presented, t0, B);
        // The same answer twice: the wait doubled (2 s, then 4 s), so at 3 s it is not due.
        let plan = cache.plan(vec![p.clone()], t0 + Duration::from_secs(3), unsettled);
        assert!(plan.probe.is_empty(), "{:?}", probed(&plan));
        let ProbeOutcome::Chain(chain) = &plan.cached[0].1 else {
            panic!("{:?}", plan.cached)
        };
        assert!(chain[0].der().is_empty(), "the leaf's DER is not kept");
        assert_eq!(chain[0], leaf.parsed());
        assert!(chain[0].is_signed_by(&issuer.parsed()));
        assert!(!chain[0].is_signed_by(&other.parsed()));
        assert_eq!(
            crate::pki::verify_chain(chain, &[r.parsed()], None),
            Ok(&r.parsed())
        );
        // A leaf its presented issuer did not sign is kept whole (judged afresh each look).
        let lying = ProbeOutcome::Chain(vec![leaf.parsed(), other.parsed()]);
        cache.record(&p, &lying, t0, B);
        let plan = cache.plan(vec![p], t0, unsettled);
        assert!(
            matches!(&plan.cached[0].1, ProbeOutcome::Chain(c) if !c[0].der().is_empty()),
            "{:?}",
            plan.cached
        );
    }

    /// The final look before old roots are dropped: a yes from memory is confirmed by a
    /// fresh probe, but a proxy probed during the look is not probed a second time (at
    /// 10,000 pods that second round doubled the last sweep).
    #[tokio::test]
    async fn a_confirming_look_probes_each_proxy_once() {
        use crate::pki::testing::{issued, root, workload};
        use crate::probe::tests::{loopback, offline_client, pod, server_config, tls_server};
        use crate::probe::ProbeMode;
        use trust_rotation_crds::defaults::PROXY_ADMIN_PORT;

        let r = root("root");
        let issuer = issued("issuer", &r, true);
        let mut servers = Vec::new();
        let mut pods = Vec::new();
        for (i, name) in ["remembered", "new"].into_iter().enumerate() {
            let identity =
                format!("{name}.emojivoto.serviceaccount.identity.linkerd.cluster.local");
            let leaf = workload(&identity, &issuer, false);
            let ip = loopback(40 + i as u8);
            let (_, handshakes) = tls_server(
                ip,
                PROXY_ADMIN_PORT,
                server_config(&leaf, &[&leaf, &issuer]),
            )
            .await;
            servers.push(handshakes);
            pods.push(pod(name, Some(ip)));
        }
        let cfg = ProbeConfig {
            mode: ProbeMode::Direct,
            concurrency: 4,
            timeout: Duration::from_secs(5),
            trust_domain: "cluster.local".into(),
            linkerd_ns: "linkerd".into(),
        };
        let cache = ProbeCache::default();
        cache.record(&pods[0], &good(), Instant::now(), B);

        let answers = look(&offline_client(), &cfg, &cache, pods.clone(), settled, B)
            .await
            .confirmed(&offline_client(), &cfg, &cache, settled, B)
            .await;
        assert_eq!(answers.len(), 2);
        assert!(answers
            .iter()
            .all(|(_, o)| matches!(o, ProbeOutcome::Chain(c) if c.len() == 2)));
        // The servers report a handshake just after the client saw it end.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut handshakes = Vec::new();
        for rx in &mut servers {
            let mut n = 0;
            while rx.try_recv().is_ok() {
                n += 1;
            }
            handshakes.push(n);
        }
        assert_eq!(
            handshakes,
            [1, 1],
            "the remembered proxy is confirmed, the new one is not probed twice"
        );

        // An answer that is not yes: nothing is confirmed (the step waits anyway).
        let mut gone = pods[1].clone();
        gone.ip = Some(loopback(42).to_string());
        gone.proxy_started_at = Some(Timestamp::from_second(1_800_000_000).unwrap());
        let answers = look(
            &offline_client(),
            &cfg,
            &cache,
            vec![pods[0].clone(), gone],
            settled,
            B,
        )
        .await
        .confirmed(&offline_client(), &cfg, &cache, settled, B)
        .await;
        assert!(
            matches!(answers[1].1, ProbeOutcome::Unreachable(_)),
            "{answers:?}"
        );
        assert!(
            servers[0].try_recv().is_err(),
            "no confirmation round without a yes"
        );
    }

    #[test]
    fn a_settled_answer_is_kept_until_the_pod_changes() {
        let c = ProbeCache::default();
        let t0 = Instant::now();
        let web = pod("emojivoto", "web-1", None);
        assert_eq!(
            probed(&c.plan(vec![web.clone()], t0, settled)),
            ["emojivoto/web-1"]
        );
        c.record(&web, &good(), t0, B);
        let later = t0 + Duration::from_secs(3600);
        let plan = c.plan(vec![web.clone()], later, settled);
        assert!(plan.probe.is_empty(), "settled: {plan:?}");
        assert_eq!(plan.cached.len(), 1);
        // Its proxy restarted: the answer may differ.
        let mut restarted = web.clone();
        restarted.proxy_started_at = Some(Timestamp::from_second(1_800_000_000).unwrap());
        assert_eq!(
            probed(&c.plan(vec![restarted], later, settled)),
            ["emojivoto/web-1"]
        );
        // A new IP (a reused name on another address) too.
        let mut moved = web.clone();
        moved.ip = Some("127.0.10.9".into());
        assert_eq!(
            probed(&c.plan(vec![moved], later, settled)),
            ["emojivoto/web-1"]
        );
    }

    #[test]
    fn a_pod_turning_ready_is_probed_again_without_waiting_out_the_backoff() {
        let c = ProbeCache::default();
        let t0 = Instant::now();
        let mut starting = pod("emojivoto", "web-2", None);
        starting.ready = false;
        c.record(&starting, &ProbeOutcome::TimedOut, t0, B);
        let soon = t0 + Duration::from_millis(100);
        assert!(c
            .plan(vec![starting.clone()], soon, settled)
            .probe
            .is_empty());
        let mut ready = starting;
        ready.ready = true;
        assert_eq!(
            probed(&c.plan(vec![ready], soon, settled)),
            ["emojivoto/web-2"]
        );
    }

    #[test]
    fn an_unchanged_unsettled_answer_backs_off_to_the_refresh_interval_and_a_change_resets_it() {
        let c = ProbeCache::default();
        let stuck = pod("emojivoto", "voting-1", None);
        let timed_out = ProbeOutcome::TimedOut;
        let mut now = Instant::now();
        let mut probes = 0;
        let mut waits = Vec::new();
        let mut last = now;
        // Look every second for ten minutes.
        for _ in 0..600 {
            if !c.plan(vec![stuck.clone()], now, settled).probe.is_empty() {
                probes += 1;
                waits.push((now - last).as_secs());
                last = now;
                c.record(&stuck, &timed_out, now, B);
            }
            now += Duration::from_secs(1);
        }
        assert_eq!(&waits[1..6], [2, 4, 8, 16, 32], "doubling: {waits:?}");
        assert!(waits[6..].iter().all(|w| *w == 60), "capped: {waits:?}");
        assert!(probes < 20, "{probes} probes in ten minutes");
        // The answer changes: back to the first wait.
        c.record(&stuck, &ProbeOutcome::Unreachable("refused".into()), now, B);
        assert!(c
            .plan(vec![stuck.clone()], now + Duration::from_secs(1), settled)
            .probe
            .is_empty());
        assert_eq!(
            probed(&c.plan(vec![stuck.clone()], now + Duration::from_secs(2), settled)),
            ["emojivoto/voting-1"]
        );
    }

    #[test]
    fn gone_pods_are_forgotten_and_judging_stays_with_the_caller() {
        let c = ProbeCache::default();
        let t0 = Instant::now();
        let web = pod("emojivoto", "web-1", None);
        c.record(&web, &good(), t0, B);
        // The caller no longer calls it settled (a new issuer): probed again once due.
        let plan = c.plan(vec![web.clone()], t0 + Duration::from_secs(1), |_| false);
        assert!(plan.probe.is_empty() && plan.cached.len() == 1, "{plan:?}");
        let plan = c.plan(vec![web.clone()], t0 + Duration::from_secs(2), |_| false);
        assert_eq!(probed(&plan), ["emojivoto/web-1"]);
        // Gone, then back with the same name: probed, not remembered.
        c.plan(Vec::new(), t0, settled);
        assert_eq!(probed(&c.plan(vec![web], t0, settled)), ["emojivoto/web-1"]);
    }
}
