//! The mTLS oracle: for every ordered pair of distinct meshed pods (client, server), would
//! mTLS succeed now? Yes iff the server's chain verifies against the client's roots (server
//! auth), the client's chain verifies against the server's roots (client auth), and both
//! leaves are valid now. Verified with rustls-webpki.
//!
//! Pods are grouped into classes of (roots, issuer chain); every pod of a class behaves the
//! same, so the work is classes², not pods². A pod whose leaf is expired (or which has no
//! certificate yet while it already served traffic) fails every pair. Pods whose proxy has
//! not received its first certificate are not Ready and take no traffic: they are counted
//! as "without a valid certificate" but not in the ratio.

use super::pki::{self, Usage};
use super::proxy::Proxy;
use super::Shared;
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

/// One evaluation.
#[derive(Clone, Debug, PartialEq)]
pub struct OracleSnapshot {
    /// Unix seconds (fractional) of the evaluation.
    pub at: f64,
    /// Fraction of ordered pairs of distinct certified pods that could do mTLS (1.0 when
    /// there are fewer than two).
    pub ratio: f64,
    /// Running proxies that hold a certificate (the pods in the ratio).
    pub certified_pods: usize,
    /// Meshed pods (starting, running or crash-looping) without a currently valid
    /// certificate: no proxy up yet, none issued yet, or expired.
    pub pods_without_valid_certificate: usize,
    /// Number of (roots, issuer chain) classes.
    pub classes: usize,
    /// Pods in a failing pair (namespace/name), at most 50, sorted.
    pub failing_pods: Vec<String>,
    pub failing_pod_count: usize,
    /// One failing pair and why, e.g. "client emojivoto/web-… rejects server linkerd/…'s
    /// certificate: does not verify: InvalidSignatureForPublicKey" (same-named roots).
    pub example: Option<String>,
}

/// A stretch of time in which the ratio was below 1.
#[derive(Clone, Debug, PartialEq)]
pub struct LowInterval {
    pub start: f64,
    /// None while it lasts.
    pub end: Option<f64>,
    pub min_ratio: f64,
    /// Pods involved at any point (at most 200, sorted).
    pub pods: Vec<String>,
    /// The first failing pair seen in the interval, and why.
    pub example: Option<String>,
}

/// Everything the oracle has seen since it started (or was reset).
#[derive(Clone, Debug, PartialEq)]
pub struct OracleReport {
    pub current: OracleSnapshot,
    pub min_ratio: f64,
    pub intervals: Vec<LowInterval>,
    pub samples: u64,
}

#[derive(Default)]
struct History {
    min_ratio: Option<f64>,
    intervals: Vec<LowInterval>,
    samples: u64,
    last: Option<OracleSnapshot>,
}

/// The oracle. Samples in the background; [`Oracle::evaluate`] computes on demand.
#[derive(Clone)]
pub struct Oracle {
    shared: Arc<Shared>,
    history: Arc<Mutex<History>>,
}

struct PodView {
    idx: usize,
    roots: usize,
    chain: Option<usize>,
}

impl Oracle {
    pub(crate) fn start(shared: Arc<Shared>) -> Self {
        let o = Self {
            shared: shared.clone(),
            history: Arc::default(),
        };
        let bg = o.clone();
        tokio::spawn(async move {
            loop {
                let t = std::time::Instant::now();
                bg.sample();
                // Never spend more than a tenth of a core on sampling (10,000 pods).
                let wait = bg.shared.durations.oracle_interval.max(t.elapsed() * 10);
                tokio::select! {
                    _ = bg.shared.cancel.cancelled() => return,
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        });
        o
    }

    /// Evaluates now and records the result in the run's history.
    pub fn sample(&self) -> OracleSnapshot {
        let snap = evaluate(
            &self.shared.proxies.all(),
            self.shared.proxies.meshed_pods(),
        );
        let mut h = self.history.lock().unwrap_or_else(|e| e.into_inner());
        h.samples += 1;
        h.min_ratio = Some(h.min_ratio.map_or(snap.ratio, |m| m.min(snap.ratio)));
        if snap.ratio < 1.0 {
            let open = h.intervals.last_mut().filter(|i| i.end.is_none());
            match open {
                Some(i) => {
                    i.min_ratio = i.min_ratio.min(snap.ratio);
                    let mut set: BTreeSet<String> = i.pods.iter().cloned().collect();
                    set.extend(snap.failing_pods.iter().cloned());
                    i.pods = set.into_iter().take(200).collect();
                }
                None => h.intervals.push(LowInterval {
                    start: snap.at,
                    end: None,
                    min_ratio: snap.ratio,
                    pods: snap.failing_pods.clone(),
                    example: snap.example.clone(),
                }),
            }
        } else if let Some(i) = h.intervals.last_mut().filter(|i| i.end.is_none()) {
            i.end = Some(snap.at);
        }
        h.last = Some(snap.clone());
        snap
    }

    /// The current ratio (evaluated now).
    pub fn ratio(&self) -> f64 {
        self.sample().ratio
    }

    /// Current state, minimum and every interval below 1.0 since start (or [`Oracle::reset`]).
    pub fn report(&self) -> OracleReport {
        let current = self.sample();
        let h = self.history.lock().unwrap_or_else(|e| e.into_inner());
        OracleReport {
            current,
            min_ratio: h.min_ratio.unwrap_or(1.0),
            intervals: h.intervals.clone(),
            samples: h.samples,
        }
    }

    /// The minimum ratio seen so far.
    pub fn min_ratio(&self) -> f64 {
        self.report().min_ratio
    }

    /// Forgets the history (e.g. after the topology converged, before a scenario).
    pub fn reset(&self) {
        *self.history.lock().unwrap_or_else(|e| e.into_inner()) = History::default();
    }

    /// Prometheus text lines for the simulator's `/metrics`.
    pub fn metrics_text(&self) -> String {
        let last = self
            .history
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .last
            .clone();
        let s = last.unwrap_or_else(|| self.sample());
        let min = self
            .history
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .min_ratio
            .unwrap_or(1.0);
        format!(
            "# HELP cluster_sim_mtls_ok_ratio Fraction of ordered pairs of certified meshed pods that could establish mTLS now.\n\
             # TYPE cluster_sim_mtls_ok_ratio gauge\n\
             cluster_sim_mtls_ok_ratio {}\n\
             # HELP cluster_sim_mtls_ok_ratio_min Lowest cluster_sim_mtls_ok_ratio since the simulator started.\n\
             # TYPE cluster_sim_mtls_ok_ratio_min gauge\n\
             cluster_sim_mtls_ok_ratio_min {}\n\
             # HELP cluster_sim_meshed_pods Running meshed pods that hold a workload certificate.\n\
             # TYPE cluster_sim_meshed_pods gauge\n\
             cluster_sim_meshed_pods {}\n\
             # HELP cluster_sim_meshed_pods_without_valid_certificate Meshed pods (starting, running or crash-looping) without a currently valid workload certificate.\n\
             # TYPE cluster_sim_meshed_pods_without_valid_certificate gauge\n\
             cluster_sim_meshed_pods_without_valid_certificate {}\n",
            s.ratio, min, s.certified_pods, s.pods_without_valid_certificate
        )
    }
}

/// Computes the oracle over a set of proxies.
/// `meshed_pods`: pods with a proxy container the kubelet runs (some may have no proxy up).
pub fn evaluate(proxies: &[Arc<Proxy>], meshed_pods: usize) -> OracleSnapshot {
    let now_ms = jiff::Timestamp::now().as_millisecond();
    let now = now_ms / 1000;
    let mut roots_ids: HashMap<String, usize> = HashMap::new();
    let mut roots_list: Vec<Arc<pki::Roots>> = Vec::new();
    let mut chain_ids: HashMap<String, usize> = HashMap::new();
    let mut chain_reps: Vec<Arc<Vec<rustls_pki_types::CertificateDer<'static>>>> = Vec::new();
    let mut views = Vec::with_capacity(proxies.len());
    let mut without_valid = 0usize;
    for (idx, p) in proxies.iter().enumerate() {
        let ri = match roots_ids.get(&p.roots.id) {
            Some(i) => *i,
            None => {
                roots_list.push(p.roots.clone());
                roots_ids.insert(p.roots.id.clone(), roots_list.len() - 1);
                roots_list.len() - 1
            }
        };
        let Some(held) = p.held() else {
            without_valid += 1;
            continue;
        };
        let valid = held.not_before <= now && now < held.not_after;
        let chain = if valid {
            Some(*chain_ids.entry(held.chain_id.clone()).or_insert_with(|| {
                chain_reps.push(held.chain.clone());
                chain_reps.len() - 1
            }))
        } else {
            without_valid += 1;
            None
        };
        views.push(PodView {
            idx,
            roots: ri,
            chain,
        });
    }
    // Does chain c verify against roots r (for usage)? Computed once per pair of classes.
    let mut verifies: HashMap<(usize, usize, bool), bool> = HashMap::new();
    let mut ok_with = |c: usize, r: usize, server: bool| -> bool {
        *verifies.entry((c, r, server)).or_insert_with(|| {
            pki::verify(
                &chain_reps[c],
                &roots_list[r],
                now,
                if server { Usage::Server } else { Usage::Client },
            )
            .is_ok()
        })
    };
    // Classes: (roots, chain) with counts.
    let mut classes: HashMap<(usize, Option<usize>), usize> = HashMap::new();
    let mut representative: HashMap<(usize, Option<usize>), usize> = HashMap::new();
    for v in &views {
        *classes.entry((v.roots, v.chain)).or_default() += 1;
        representative.entry((v.roots, v.chain)).or_insert(v.idx);
    }
    let pod_name = |class: &(usize, Option<usize>)| {
        representative.get(class).map_or_else(String::new, |&i| {
            format!("{}/{}", proxies[i].namespace, proxies[i].pod)
        })
    };
    // Why a pod's certificate is not valid now, and why its renewal did not replace it.
    let no_valid = |class: &(usize, Option<usize>)| {
        let Some(p) = representative.get(class).map(|&i| &proxies[i]) else {
            return String::new();
        };
        let mut why = format!("{}/{} has no valid certificate", p.namespace, p.pod);
        if let Some(h) = p.held() {
            let at = |t: i64| {
                jiff::Timestamp::from_second(t).map_or_else(|_| t.to_string(), |t| t.to_string())
            };
            why += &if h.not_after <= now {
                format!(" (it expired at {})", at(h.not_after))
            } else {
                format!(" (it is valid from {})", at(h.not_before))
            };
        }
        match p.last_renewal_error() {
            Some(e) => why + &format!("; its last renewal failed: {e}"),
            None => why,
        }
    };
    let mut example: Option<String> = None;
    let class_list: Vec<((usize, Option<usize>), usize)> = classes.into_iter().collect();
    let n = views.len() as u128;
    let total = n * n.saturating_sub(1);
    let mut ok: u128 = 0;
    let mut failing_classes: BTreeSet<(usize, Option<usize>)> = BTreeSet::new();
    for &((cr, cc), cn) in &class_list {
        for &((sr, sc), sn) in &class_list {
            let pair_ok = match (cc, sc) {
                (Some(cc), Some(sc)) => ok_with(sc, cr, true) && ok_with(cc, sr, false),
                _ => false,
            };
            let same = (cr, cc) == (sr, sc);
            let pairs = if same {
                (cn as u128) * (cn as u128).saturating_sub(1)
            } else {
                cn as u128 * sn as u128
            };
            if pair_ok {
                ok += pairs;
            } else if pairs > 0 {
                failing_classes.insert((cr, cc));
                failing_classes.insert((sr, sc));
                if example.is_none() {
                    let (client, server) = (pod_name(&(cr, cc)), pod_name(&(sr, sc)));
                    example = Some(match (cc, sc) {
                        (None, _) => no_valid(&(cr, cc)),
                        (_, None) => no_valid(&(sr, sc)),
                        (Some(cc), Some(sc)) => {
                            let why = |c: usize, r: usize, usage: Usage| {
                                pki::verify(&chain_reps[c], &roots_list[r], now, usage)
                                    .err()
                                    .map(|e| e.to_string())
                            };
                            match why(sc, cr, Usage::Server) {
                                Some(e) => format!(
                                    "client {client} rejects server {server}'s certificate: {e}"
                                ),
                                None => format!(
                                    "server {server} rejects client {client}'s certificate: {}",
                                    why(cc, sr, Usage::Client).unwrap_or_default()
                                ),
                            }
                        }
                    });
                }
            }
        }
    }
    let ratio = if total == 0 {
        1.0
    } else {
        ok as f64 / total as f64
    };
    let mut failing: Vec<String> = views
        .iter()
        .filter(|v| failing_classes.contains(&(v.roots, v.chain)))
        .map(|v| format!("{}/{}", proxies[v.idx].namespace, proxies[v.idx].pod))
        .collect();
    failing.sort();
    let failing_pod_count = failing.len();
    let valid = views.iter().filter(|v| v.chain.is_some()).count();
    failing.truncate(50);
    OracleSnapshot {
        at: now_ms as f64 / 1000.0,
        ratio,
        certified_pods: views.len(),
        pods_without_valid_certificate: without_valid.max(meshed_pods.saturating_sub(valid)),
        classes: class_list.len(),
        failing_pods: failing,
        failing_pod_count,
        example,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mesh::pki::{self, Template};
    use crate::mesh::{Durations, Shared};
    use rcgen::KeyPair;
    use rustls_pki_types::CertificateDer;
    use serde_json::json;

    type Ca = (CertificateDer<'static>, KeyPair);

    fn ca(cn: &str, by: Option<&Ca>) -> Ca {
        let key = pki::new_key(None).unwrap();
        let now = pki::unix_now();
        let t = Template {
            common_name: Some(cn),
            dns_names: &[],
            is_ca: true,
            not_before: now - 60,
            not_after: now + 3600,
            workload: false,
        };
        let der = match by {
            None => pki::self_signed(&t, &key).unwrap(),
            Some(by) => pki::signed_by(&t, &key, &by.0, &by.1).unwrap(),
        };
        (der, key)
    }

    fn shared() -> Shared {
        Shared {
            store: crate::store::Store::new(),
            durations: Durations::fast(),
            proxies: Default::default(),
            identity: Default::default(),
            ips: crate::mesh::kubelet::IpAllocator::new(7),
            admin_ports: crate::mesh::listeners::AdminPorts::new(&Default::default(), 0)
                .expect("admin ports"),
            bundle_view: Default::default(),
            cancel: Default::default(),
            topology: crate::mesh::topology::progress(),
            clock: crate::mesh::cron::SimClock::new(Durations::fast().cron_minute),
            next_node: Default::default(),
            max_unavailable: Default::default(),
        }
    }

    /// A proxy trusting `roots`, holding a leaf from `issuer`.
    fn proxy(shared: &Shared, name: &str, roots: &[&Ca], issuer: &Ca) -> Arc<Proxy> {
        let anchors: String = roots.iter().map(|r| pki::to_pem(&r.0)).collect();
        let pod = json!({"metadata": {"namespace": "ns", "name": name}, "spec": {}});
        let env = vec![(crate::mesh::ENV_TRUST_ANCHORS.to_string(), anchors)];
        let p = Proxy::new(shared, &pod, std::net::Ipv4Addr::new(127, 9, 9, 9), env).unwrap();
        let key = pki::new_key(None).unwrap();
        let now = pki::unix_now();
        let t = Template {
            common_name: None,
            dns_names: std::slice::from_ref(&p.identity),
            is_ca: false,
            not_before: now - 10,
            not_after: now + 600,
            workload: true,
        };
        let leaf = pki::signed_by(&t, &key, &issuer.0, &issuer.1).unwrap();
        p.accept(vec![leaf, issuer.0.clone()]).unwrap();
        Arc::new(p)
    }

    #[test]
    fn ratio_counts_ordered_pairs_of_classes_that_verify_both_ways() {
        let s = shared();
        let (old, new) = (ca("root", None), ca("root", None));
        let (old_issuer, new_issuer) = (ca("identity", Some(&old)), ca("identity", Some(&new)));
        let all = vec![
            proxy(&s, "a1", &[&old], &old_issuer),
            proxy(&s, "a2", &[&old], &old_issuer),
            proxy(&s, "b1", &[&new], &new_issuer),
            proxy(&s, "c1", &[&old, &new], &new_issuer),
            proxy(&s, "c2", &[&new, &old], &new_issuer),
        ];
        let snap = evaluate(&all, all.len());
        // a<->a 2, c<->c 2, b->c 2, c->b 2: 8 of 5*4 ordered pairs.
        assert_eq!(snap.ratio, 8.0 / 20.0);
        assert_eq!(snap.classes, 3, "root order does not make a new class");
        assert_eq!(snap.certified_pods, 5);
        assert_eq!(snap.pods_without_valid_certificate, 0);

        let healthy = evaluate(&all[3..], 2);
        assert_eq!(healthy.ratio, 1.0);
        assert!(healthy.failing_pods.is_empty());
        // A meshed pod whose proxy is not up is counted, not paired.
        assert_eq!(evaluate(&all[3..], 3).pods_without_valid_certificate, 1);
        assert_eq!(evaluate(&[], 0).ratio, 1.0);
    }

    #[test]
    fn a_proxy_rejects_a_certificate_outside_its_roots_and_keeps_the_old_one() {
        let s = shared();
        let (old, new) = (ca("root", None), ca("root", None));
        let (old_issuer, new_issuer) = (ca("identity", Some(&old)), ca("identity", Some(&new)));
        let p = proxy(&s, "p", &[&old], &old_issuer);
        let before = p.held().unwrap().chain_id;
        let key = pki::new_key(None).unwrap();
        let now = pki::unix_now();
        let t = Template {
            common_name: None,
            dns_names: &[],
            is_ca: false,
            not_before: now - 10,
            not_after: now + 600,
            workload: true,
        };
        let leaf = pki::signed_by(&t, &key, &new_issuer.0, &new_issuer.1).unwrap();
        assert!(p.accept(vec![leaf, new_issuer.0.clone()]).is_err());
        assert_eq!(p.held().unwrap().chain_id, before);
        assert!(p
            .metrics()
            .contains("control_identity_cert_refreshes_total{result=\"error\"} 1"));
    }
}
