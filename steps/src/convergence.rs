//! The one implementation of "what has converged", shared by the operator (which gates phases
//! on it) and the CLI (which shows it).
//!
//! Two questions per meshed workload pod:
//! - **trust bundle**: was the pod injected with the current `linkerd-identity-trust-roots`
//!   value? Answered from the `linkerd.io/trust-root-sha256` annotation (the injector's hash of
//!   the exact bytes) or, failing that, the proxy's inline trust-anchor env compared the way
//!   `linkerd check --proxy` does (trimmed).
//! - **workload certificate**: does the certificate the proxy presents right now chain to the
//!   active identity issuer? Answered by signature verification only, never by names (the
//!   issuer keeps its subject across rotations).
//!
//! Only pods outside the control plane that are not being deleted count.

use crate::bundle::{env_matches_bundle, trust_root_sha256};
use crate::observe::MeshedPod;
use crate::pki::{short_fingerprint, Certificate};
use crate::probe::ProbeOutcome;
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use std::fmt;
use std::sync::Arc;
use trust_rotation_crds::Convergence;

/// Whether a state counts as converged.
pub trait Converged {
    fn is_converged(&self) -> bool;
}

/// A pod's trust bundle compared with the current one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BundleState {
    /// Injected with the current bundle.
    Current,
    /// Injected with another bundle (or nothing says which): needs a restart.
    Stale,
    /// The pod carries no `linkerd-proxy` container.
    NoProxy,
}

impl BundleState {
    /// Stable machine name (`current`, `stale`, `no-proxy`), used in JSON.
    pub fn as_str(&self) -> &'static str {
        match self {
            BundleState::Current => "current",
            BundleState::Stale => "stale",
            BundleState::NoProxy => "no-proxy",
        }
    }
}

impl fmt::Display for BundleState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BundleState::Current => "current",
            BundleState::Stale => "stale bundle",
            BundleState::NoProxy => "no proxy",
        })
    }
}

impl Converged for BundleState {
    fn is_converged(&self) -> bool {
        matches!(self, BundleState::Current)
    }
}

/// Compares a pod with the exact ConfigMap value `bundle_value`.
///
/// `Current` when the annotation equals the injector's hash of the exact value, or when the
/// proxy's inline env equals the value after trimming (what `linkerd check --proxy` accepts).
/// A pod whose annotation differs but whose env matches is current: the annotation is only a
/// shortcut. A control-plane pod reading the bundle through `valueFrom` has neither and is
/// reported `Stale` here; judge it with [`control_plane_bundle_state`].
pub fn bundle_state(pod: &MeshedPod, bundle_value: &str) -> BundleState {
    bundle_state_by(pod, bundle_value, &trust_root_sha256(bundle_value))
}

/// [`bundle_state`] with the bundle's digest computed once for every pod.
fn bundle_state_by(pod: &MeshedPod, bundle_value: &str, bundle_sha256: &str) -> BundleState {
    if !pod.has_proxy {
        return BundleState::NoProxy;
    }
    if pod.trust_root_sha256.as_deref() == Some(bundle_sha256) {
        return BundleState::Current;
    }
    match pod.trust_anchors_env.as_deref() {
        Some(env) if env_matches_bundle(env, bundle_value) => BundleState::Current,
        _ => BundleState::Stale,
    }
}

/// A control-plane proxy reads the bundle from the ConfigMap when it starts, so it is current
/// once its `linkerd-proxy` container started at or after `bundle_changed_at`. A proxy with no
/// known start time is `Stale`.
pub fn control_plane_bundle_state(pod: &MeshedPod, bundle_changed_at: Timestamp) -> BundleState {
    if !pod.has_proxy {
        return BundleState::NoProxy;
    }
    match pod.proxy_started_at {
        Some(t) if t >= bundle_changed_at => BundleState::Current,
        _ => BundleState::Stale,
    }
}

/// The certificate a proxy presents, compared with the active identity issuer.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CertState {
    /// Signed by the active issuer.
    Active,
    /// Signed by another issuer; carries the fingerprint of the presented intermediate
    /// (`chain[1]`) when the proxy sent one.
    OtherIssuer {
        issuer_fingerprint: Option<Arc<str>>,
    },
    /// Outside a rotation's RenewingWorkloadCerts: signed by a previous issuer whose chain
    /// leads to a root of the current bundle (every pod for up to a day after cert-manager's
    /// routine issuer renewal). Healthy: the proxy renews it by itself before `expires`.
    Trusted {
        issuer_fingerprint: Option<Arc<str>>,
        expires: jiff::Timestamp,
    },
    /// The proxy could not be reached (the text says why).
    Unreachable(String),
    /// The proxy did not answer within the probe timeout.
    TimedOut,
    /// The pod carries no `linkerd-proxy` container.
    NoProxy,
    /// The proxy answered with something that is not a usable certificate chain.
    Invalid(String),
}

impl CertState {
    /// Stable machine name (`active`, `other-issuer`, `unreachable`, `timed-out`, `no-proxy`,
    /// `invalid`), used in JSON.
    pub fn as_str(&self) -> &'static str {
        match self {
            CertState::Active => "active",
            CertState::OtherIssuer { .. } => "other-issuer",
            CertState::Trusted { .. } => "trusted",
            CertState::Unreachable(_) => "unreachable",
            CertState::TimedOut => "timed-out",
            CertState::NoProxy => "no-proxy",
            CertState::Invalid(_) => "invalid",
        }
    }

    /// The detail that goes with [`CertState::as_str`], if any.
    pub fn detail(&self) -> Option<&str> {
        match self {
            CertState::OtherIssuer { issuer_fingerprint }
            | CertState::Trusted {
                issuer_fingerprint, ..
            } => issuer_fingerprint.as_deref(),
            CertState::Unreachable(s) | CertState::Invalid(s) => Some(s),
            _ => None,
        }
    }
}

impl fmt::Display for CertState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CertState::Active => f.write_str("active issuer"),
            CertState::OtherIssuer {
                issuer_fingerprint: Some(fp),
            } => write!(f, "old issuer {}", short_fingerprint(fp)),
            CertState::OtherIssuer {
                issuer_fingerprint: None,
            } => f.write_str("old issuer"),
            CertState::Trusted { expires, .. } => {
                write!(f, "previous issuer, renews by itself before {expires}")
            }
            CertState::Unreachable(why) => write!(f, "unreachable: {why}"),
            CertState::TimedOut => f.write_str("timed out"),
            CertState::NoProxy => f.write_str("no proxy"),
            CertState::Invalid(why) => write!(f, "invalid: {why}"),
        }
    }
}

impl Converged for CertState {
    fn is_converged(&self) -> bool {
        matches!(self, CertState::Active | CertState::Trusted { .. })
    }
}

/// Judges a probe's outcome: `Active` iff the presented leaf's signature verifies with the
/// active issuer's public key.
pub fn cert_state(outcome: &ProbeOutcome, active_issuer: &Certificate) -> CertState {
    match outcome {
        ProbeOutcome::Chain(chain) => match chain.first() {
            None => CertState::Invalid("the proxy presented no parsable certificate".into()),
            Some(leaf) if leaf.is_signed_by(active_issuer) => CertState::Active,
            Some(_) => CertState::OtherIssuer {
                issuer_fingerprint: chain.get(1).map(Certificate::shared_fingerprint),
            },
        },
        ProbeOutcome::Unreachable(why) => CertState::Unreachable(why.clone()),
        ProbeOutcome::TimedOut => CertState::TimedOut,
        ProbeOutcome::NoProxy => CertState::NoProxy,
        ProbeOutcome::Rejected(why) => CertState::Invalid(why.clone()),
    }
}

/// Judges a probe's outcome outside a rotation's RenewingWorkloadCerts, when any issuer under
/// the current trust anchor is healthy: `Active` as [`cert_state`], `Trusted` when the
/// presented chain (leaf, then the issuer the proxy sent) verifies to one of `roots`, else as
/// [`cert_state`].
pub fn cert_state_under(
    outcome: &ProbeOutcome,
    active_issuer: &Certificate,
    roots: &[Certificate],
) -> CertState {
    let strict = cert_state(outcome, active_issuer);
    match (&strict, outcome) {
        (CertState::OtherIssuer { issuer_fingerprint }, ProbeOutcome::Chain(chain))
            if crate::pki::verify_chain(chain, roots, None).is_ok() =>
        {
            CertState::Trusted {
                issuer_fingerprint: issuer_fingerprint.clone(),
                expires: chain[0].not_after(),
            }
        }
        _ => strict,
    }
}

/// One pod that has not converged, and why. Its facts (`pod`, `owner`, ...) are the shared
/// [`MeshedPod`]'s: a look over 50,000 unconverged pods copies no names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodStatus<S> {
    pub meshed: MeshedPod,
    pub state: S,
}

impl<S> std::ops::Deref for PodStatus<S> {
    type Target = crate::observe::PodFacts;
    fn deref(&self) -> &Self::Target {
        &self.meshed
    }
}

/// Convergence counts over the pods that must converge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tally<S> {
    pub converged: u32,
    pub target: u32,
    /// Every pod that has not converged, sorted by namespace and name.
    pub unconverged: Vec<PodStatus<S>>,
}

impl<S> Default for Tally<S> {
    fn default() -> Self {
        Self {
            converged: 0,
            target: 0,
            unconverged: Vec::new(),
        }
    }
}

impl<S: Converged> Tally<S> {
    fn from_states<'a>(states: impl IntoIterator<Item = (&'a MeshedPod, S)>) -> Self {
        let mut t = Tally::default();
        for (pod, state) in states {
            if !pod.is_workload() {
                continue;
            }
            t.target = t.target.saturating_add(1);
            if state.is_converged() {
                t.converged = t.converged.saturating_add(1);
            } else {
                t.unconverged.push(PodStatus {
                    meshed: pod.clone(),
                    state,
                });
            }
        }
        t.unconverged.sort_by(|a, b| a.pod.cmp(&b.pod));
        t
    }
}

impl<S> Tally<S> {
    /// Whether every target pod has converged.
    pub fn is_complete(&self) -> bool {
        self.converged == self.target
    }

    /// The status form: `converged/target` and at most ten unconverged pods as `ns/name`.
    pub fn to_status(&self, at: Option<Time>) -> Convergence {
        Convergence::new(
            self.converged,
            self.target,
            self.unconverged
                .iter()
                .take(10)
                .map(|p| p.pod.to_string())
                .collect(),
            at,
        )
    }
}

/// Trust-bundle convergence of the workload pods (control plane excluded; a Terminating pod
/// counts until it is gone; a pod without a proxy counts as unconverged).
pub fn bundle_convergence(pods: &[MeshedPod], bundle_value: &str) -> Tally<BundleState> {
    let sha = trust_root_sha256(bundle_value);
    Tally::from_states(
        pods.iter()
            .map(|p| (p, bundle_state_by(p, bundle_value, &sha))),
    )
}

/// Workload-certificate convergence from judged probe results (see [`cert_state`]).
/// Unreachable and timed-out pods never count as converged.
pub fn cert_convergence(judged: &[(MeshedPod, CertState)]) -> Tally<CertState> {
    cert_convergence_of(judged.iter().map(|(p, s)| (p, s)))
}

/// [`cert_convergence`] over borrowed pods and states, for a step that keeps more per pod
/// than its state (at 50,000 pods, a copy of each pod per view adds up).
pub fn cert_convergence_of<'a>(
    judged: impl IntoIterator<Item = (&'a MeshedPod, &'a CertState)>,
) -> Tally<CertState> {
    Tally::from_states(judged.into_iter().map(|(p, s)| (p, s.clone())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::testing::{issued, root};

    fn pod(ns: &str, name: &str) -> MeshedPod {
        MeshedPod::from(crate::observe::PodFacts {
            pod: crate::observe::PodRef::new(ns, name),
            owner: Some(format!("deployment/{name}")),
            service_account: "default".into(),
            ip: Some("127.0.0.2".into()),
            ready: true,
            deleting: false,
            deletion_deadline: None,
            proxy_version: None,
            control_plane: ns == "linkerd",
            has_proxy: true,
            trust_root_sha256: None,
            trust_anchors_env: None,
            proxy_started_at: None,
            created_at: None,
            admin_port: trust_rotation_crds::defaults::PROXY_ADMIN_PORT,
        })
    }

    const BUNDLE: &str = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";

    #[test]
    fn bundle_state_by_exact_hash_then_trimmed_env() {
        let mut p = pod("app", "a");
        assert_eq!(bundle_state(&p, BUNDLE), BundleState::Stale);
        p.trust_root_sha256 = Some(trust_root_sha256(BUNDLE).into());
        assert_eq!(bundle_state(&p, BUNDLE), BundleState::Current);
        // The hash is over exact bytes: a different trailing newline is another bundle...
        assert_eq!(bundle_state(&p, BUNDLE.trim_end()), BundleState::Stale);
        // ...unless the env says the trimmed contents match.
        p.trust_root_sha256 = Some("0000".into());
        p.trust_anchors_env = Some(format!("{}\n", BUNDLE.trim()).into());
        assert_eq!(bundle_state(&p, BUNDLE.trim_end()), BundleState::Current);
        p.trust_anchors_env = Some("something else".into());
        assert_eq!(bundle_state(&p, BUNDLE), BundleState::Stale);
        p.has_proxy = false;
        assert_eq!(bundle_state(&p, BUNDLE), BundleState::NoProxy);
    }

    #[test]
    fn control_plane_judged_by_proxy_start() {
        let mut p = pod("linkerd", "linkerd-identity");
        let t = Timestamp::from_second(1_000).unwrap();
        assert_eq!(control_plane_bundle_state(&p, t), BundleState::Stale);
        p.proxy_started_at = Some(Timestamp::from_second(999).unwrap());
        assert_eq!(control_plane_bundle_state(&p, t), BundleState::Stale);
        p.proxy_started_at = Some(t);
        assert_eq!(control_plane_bundle_state(&p, t), BundleState::Current);
    }

    #[test]
    fn bundle_tally_excludes_control_plane_and_counts_terminating_pods() {
        let mut current = pod("app", "b-current");
        current.trust_root_sha256 = Some(trust_root_sha256(BUNDLE).into());
        let stale = pod("app", "a-stale");
        let mut noproxy = pod("app", "c-noproxy");
        noproxy.has_proxy = false;
        let mut deleting = pod("app", "d-deleting");
        deleting.deleting = true;
        let cp = pod("linkerd", "linkerd-destination");
        let t = bundle_convergence(&[current, noproxy, stale, deleting, cp], BUNDLE);
        assert_eq!((t.converged, t.target), (1, 4));
        let names: Vec<String> = t.unconverged.iter().map(|p| p.pod.to_string()).collect();
        assert_eq!(
            names,
            vec!["app/a-stale", "app/c-noproxy", "app/d-deleting"]
        );
        assert_eq!(t.unconverged[1].state, BundleState::NoProxy);
        assert_eq!(
            t.unconverged[0].owner.as_deref(),
            Some("deployment/a-stale")
        );
        let s = t.to_status(None);
        assert_eq!(s.summary, "1/4");
        assert_eq!(
            s.unconverged,
            vec!["app/a-stale", "app/c-noproxy", "app/d-deleting"]
        );
        assert!(!t.is_complete());
        let empty = bundle_convergence(&[], BUNDLE);
        assert!(empty.is_complete());
        assert_eq!(empty.to_status(None).summary, "0/0");
    }

    #[test]
    fn status_names_at_most_ten() {
        let pods: Vec<MeshedPod> = (0..25).map(|i| pod("app", &format!("p{i:02}"))).collect();
        let t = bundle_convergence(&pods, BUNDLE);
        assert_eq!(t.unconverged.len(), 25);
        let s = t.to_status(None);
        assert_eq!(s.summary, "0/25");
        assert_eq!(s.unconverged.len(), 10);
        assert_eq!(s.unconverged[0], "app/p00");
    }

    #[test]
    fn cert_state_by_signature_only() {
        // Same subject names everywhere, as cert-manager does across rotations.
        let r = root("root.linkerd.cluster.local");
        let old_issuer = issued("identity.linkerd.cluster.local", &r, true);
        let new_issuer = issued("identity.linkerd.cluster.local", &r, true);
        let leaf_old = issued(
            "web.app.serviceaccount.identity.linkerd.cluster.local",
            &old_issuer,
            false,
        );
        let leaf_new = issued(
            "web.app.serviceaccount.identity.linkerd.cluster.local",
            &new_issuer,
            false,
        );
        let active = new_issuer.parsed();

        let ok = ProbeOutcome::Chain(vec![leaf_new.parsed(), new_issuer.parsed()]);
        assert_eq!(cert_state(&ok, &active), CertState::Active);
        // A leaf alone is enough when it verifies.
        let ok_leaf = ProbeOutcome::Chain(vec![leaf_new.parsed()]);
        assert_eq!(cert_state(&ok_leaf, &active), CertState::Active);
        let old = ProbeOutcome::Chain(vec![leaf_old.parsed(), old_issuer.parsed()]);
        assert_eq!(
            cert_state(&old, &active),
            CertState::OtherIssuer {
                issuer_fingerprint: Some(old_issuer.parsed().fingerprint().into())
            }
        );
        // Lying about the intermediate does not help: the leaf must verify.
        let lying = ProbeOutcome::Chain(vec![leaf_old.parsed(), new_issuer.parsed()]);
        assert!(matches!(
            cert_state(&lying, &active),
            CertState::OtherIssuer { .. }
        ));
        let alone = ProbeOutcome::Chain(vec![leaf_old.parsed()]);
        assert_eq!(
            cert_state(&alone, &active),
            CertState::OtherIssuer {
                issuer_fingerprint: None
            }
        );
        assert!(matches!(
            cert_state(&ProbeOutcome::Chain(vec![]), &active),
            CertState::Invalid(_)
        ));
        assert_eq!(
            cert_state(&ProbeOutcome::Unreachable("refused".into()), &active),
            CertState::Unreachable("refused".into())
        );
        assert_eq!(
            cert_state(&ProbeOutcome::TimedOut, &active),
            CertState::TimedOut
        );
        assert_eq!(
            cert_state(&ProbeOutcome::NoProxy, &active),
            CertState::NoProxy
        );
    }

    #[test]
    fn cert_tally_never_counts_unreachable_or_timed_out() {
        let r = root("r");
        let issuer = issued("i", &r, true);
        let leaf = issued("l", &issuer, false);
        let active = issuer.parsed();
        let results = [
            (
                pod("app", "ok"),
                ProbeOutcome::Chain(vec![leaf.parsed(), active.clone()]),
            ),
            (pod("app", "slow"), ProbeOutcome::TimedOut),
            (
                pod("app", "gone"),
                ProbeOutcome::Unreachable("connection refused".into()),
            ),
            (pod("linkerd", "linkerd-identity"), ProbeOutcome::TimedOut),
        ];
        let judged: Vec<_> = results
            .iter()
            .map(|(p, o)| (p.clone(), cert_state(o, &active)))
            .collect();
        let t = cert_convergence(&judged);
        assert_eq!((t.converged, t.target), (1, 3));
        assert_eq!(t.unconverged[0].state.as_str(), "unreachable");
        assert_eq!(t.unconverged[1].state, CertState::TimedOut);
        assert_eq!(t.to_status(None).summary, "1/3");
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        fn arb_pod() -> impl Strategy<Value = (MeshedPod, bool, u8)> {
            (
                "[a-c]",
                "[a-z]{1,6}",
                any::<bool>(),
                any::<bool>(),
                any::<bool>(),
                any::<bool>(),
                0u8..4,
            )
                .prop_map(|(ns, name, cp, deleting, has_proxy, current, outcome)| {
                    let mut p = pod(if cp { "linkerd" } else { &ns }, &name);
                    p.deleting = deleting;
                    p.has_proxy = has_proxy;
                    if current {
                        p.trust_root_sha256 = Some(trust_root_sha256(BUNDLE).into());
                    }
                    (p, current, outcome)
                })
        }

        proptest! {
            #[test]
            fn tallies_are_consistent(pods in proptest::collection::vec(arb_pod(), 0..40)) {
                let only: Vec<MeshedPod> = pods.iter().map(|(p, _, _)| p.clone()).collect();
                let t = bundle_convergence(&only, BUNDLE);
                let workloads: Vec<&(MeshedPod, bool, u8)> =
                    pods.iter().filter(|(p, _, _)| p.is_workload()).collect();
                prop_assert_eq!(t.target as usize, workloads.len());
                prop_assert_eq!(t.converged as usize + t.unconverged.len(), workloads.len());
                let expected_current = workloads.iter().filter(|(p, c, _)| p.has_proxy && *c).count();
                prop_assert_eq!(t.converged as usize, expected_current);
                // Sorted, and never a control-plane pod.
                prop_assert!(t.unconverged.windows(2).all(|w| w[0].pod <= w[1].pod));
                prop_assert!(t.unconverged.iter().all(|u| u.pod.namespace != "linkerd"));
                let s = t.to_status(None);
                prop_assert!(s.unconverged.len() <= 10);
                prop_assert_eq!(s.summary, format!("{}/{}", t.converged, t.target));

                // Probe outcomes other than a chain never count.
                let judged: Vec<(MeshedPod, CertState)> = pods
                    .iter()
                    .map(|(p, _, o)| {
                        let outcome = match o {
                            0 => ProbeOutcome::TimedOut,
                            1 => ProbeOutcome::Unreachable("refused".into()),
                            2 => ProbeOutcome::NoProxy,
                            _ => ProbeOutcome::Chain(vec![]),
                        };
                        (p.clone(), cert_state(&outcome, issuer()))
                    })
                    .collect();
                let c = cert_convergence(&judged);
                prop_assert_eq!(c.converged, 0);
                prop_assert_eq!(c.target as usize, workloads.len());
            }
        }

        fn issuer() -> &'static Certificate {
            static ISSUER: std::sync::OnceLock<Certificate> = std::sync::OnceLock::new();
            ISSUER.get_or_init(|| root("issuer").parsed())
        }
    }

    #[test]
    fn outside_renewal_a_previous_issuer_under_the_anchor_is_healthy() {
        let anchor = root("anchor");
        let stranger = root("stranger");
        let active = issued("identity", &anchor, true);
        let previous = issued("identity", &anchor, true);
        let foreign = issued("identity", &stranger, true);
        let leaf = issued("web", &previous, false);
        let on_previous = ProbeOutcome::Chain(vec![leaf.parsed(), previous.parsed()]);
        let roots = [anchor.parsed()];
        let state = cert_state_under(&on_previous, &active.parsed(), &roots);
        assert_eq!(
            state,
            CertState::Trusted {
                issuer_fingerprint: Some(previous.parsed().fingerprint().into()),
                expires: leaf.parsed().not_after(),
            }
        );
        assert!(state.is_converged());
        // The same pod during RenewingWorkloadCerts: another issuer, not converged.
        assert!(!cert_state(&on_previous, &active.parsed()).is_converged());
        // An issuer under a root the bundle does not hold is not trusted.
        let elsewhere = ProbeOutcome::Chain(vec![
            issued("web", &foreign, false).parsed(),
            foreign.parsed(),
        ]);
        assert!(matches!(
            cert_state_under(&elsewhere, &active.parsed(), &roots),
            CertState::OtherIssuer { .. }
        ));
        // Without the issuer in the chain there is no proof: not trusted.
        let alone = ProbeOutcome::Chain(vec![leaf.parsed()]);
        assert!(!cert_state_under(&alone, &active.parsed(), &roots).is_converged());
    }
}
