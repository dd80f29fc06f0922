//! ReconcileBundle (old + new roots) and ReduceBundle (the new root only).

use super::guard::{check_bundle_write, check_superset};
use super::invariant::{
    foreign_roots, guard, judge, read_expectation, Expectation, Guard, Stage, Verdict, BUNDLE_DRIFT,
};
use super::propagation::{restart_commands, stuck_terminating_block};
use super::{anchor::write_previous_anchor, names, POLL};
use crate::bundle::Bundle;
use crate::convergence::{cert_convergence_of, cert_state, CertState};
use crate::observe::MeshedPod;
use crate::pki::{short_fingerprint, Certificate};
use crate::probe::ProbeOutcome;
use crate::probe_cache::{look, Backoff, ProbeCache};
use crate::read::{self, TrustBundle};
use crate::runner::telemetry::TracedWrite as _;
use crate::runner::FIELD_MANAGER;
use crate::snapshot::gone_if_stalled;
use crate::snapshot::meshed_pods;
use crate::step::{ErrorCategory, Outcome, Progress, Step, StepContext, StepError, StepReport};
use async_trait::async_trait;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams};
use trust_rotation_crds::{ConfigMapRef, Phase};

/// What a bundle step should write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BundleDecision {
    /// The ConfigMap already holds this value.
    Unchanged,
    /// Write this PEM text.
    Write(String),
    Blocked(String),
}

/// The expanded bundle: everything the current bundle holds, then the rotation's old roots it
/// lacks (restored: `fromAnchor` and any anchor it was retargeted away from), then the new
/// root, normalised. Roots are never identified by position: foreign roots keep their place.
/// Guard: it keeps every current root and still anchors the current issuer.
pub fn decide_expand(
    current: &Bundle,
    current_value: &str,
    old: &[Certificate],
    new_root: &Certificate,
    issuer_chain: &[Certificate],
) -> BundleDecision {
    let desired = Bundle::from_certs(current.certs().iter().chain(old).chain([new_root]).cloned());
    let text = desired.to_pem();
    if current_value == text {
        return BundleDecision::Unchanged;
    }
    if let Err(e) = check_superset(current, &desired)
        .and_then(|()| check_bundle_write(&desired, issuer_chain, &[]))
    {
        return BundleDecision::Blocked(e);
    }
    BundleDecision::Write(text)
}

/// The reduced bundle: the current one without the rotation's old roots (and with the new
/// root), so that foreign roots survive; only the new root when `remove_unknown_roots`.
pub fn reduced_bundle(current: &Bundle, e: &Expectation, remove_unknown_roots: bool) -> Bundle {
    if remove_unknown_roots {
        return Bundle::from_certs([e.to.clone()]);
    }
    let old: Vec<&str> = e.old.iter().map(|o| o.fingerprint.as_str()).collect();
    Bundle::from_certs(
        current
            .certs()
            .iter()
            .filter(|c| !old.contains(&c.fingerprint()))
            .chain([&e.to])
            .cloned(),
    )
}

/// Whether the reduced bundle may be written: the issuer and every live workload certificate
/// chain to it (every workload pod was probed).
pub fn decide_reduce(
    current_value: &str,
    desired: &Bundle,
    issuer_chain: &[Certificate],
    live: &[(String, Vec<Certificate>)],
) -> BundleDecision {
    let text = desired.to_pem();
    if current_value == text {
        return BundleDecision::Unchanged;
    }
    match check_bundle_write(desired, issuer_chain, live) {
        Ok(()) => BundleDecision::Write(text),
        Err(e) => BundleDecision::Blocked(e),
    }
}

/// Writes the bundle value (server-side apply of the one key, with the operator's field
/// manager).
pub async fn write_bundle(
    client: &kube::Client,
    r: &ConfigMapRef,
    value: &str,
) -> Result<(), StepError> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), &r.namespace);
    let patch = serde_json::json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": r.name, "namespace": r.namespace},
        "data": {r.key.clone(): value},
    });
    api.patch(
        &r.name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .traced_write("apply", "ConfigMap", &r.namespace, &r.name)
    .await
    .map(|_| ())
    .map_err(|e| StepError::from_kube(format!("writing ConfigMap {}/{}", r.namespace, r.name), e))
}

/// What both bundle steps read before deciding: the invariant's expectation and the bundle,
/// which must exist and not be managed by another controller. `Err` is the message the step blocks
/// with.
async fn read_inputs(
    ctx: &StepContext,
    stage: Stage,
) -> Result<Result<(Expectation, TrustBundle), String>, StepError> {
    let (e, observed) = match read_expectation(ctx, stage).await? {
        Ok(v) => v,
        Err(m) => return Ok(Err(m)),
    };
    if let Some(owner) = &observed.owner {
        return Ok(Err(owner.blocking_message(&ctx.spec.trust_roots)));
    }
    Ok(Ok((e, observed)))
}

pub struct ReconcileBundle;

#[async_trait]
impl Step for ReconcileBundle {
    fn name(&self) -> &str {
        names::RECONCILE_BUNDLE
    }

    fn phase(&self) -> Phase {
        Phase::RefreshingControlPlane
    }

    async fn run(&self, ctx: &StepContext) -> Result<StepReport, StepError> {
        let mut progress = Progress::default();
        let mut drift = None;
        let outcome = self.execute(ctx, &mut progress, &mut drift).await?;
        let report = outcome.with(progress);
        // The old root restored by the expansion itself: say who had removed it.
        Ok(match drift {
            Some(note) => report.warn(BUNDLE_DRIFT, note),
            None => report,
        })
    }
}

impl ReconcileBundle {
    async fn execute(
        &self,
        ctx: &StepContext,
        progress: &mut Progress,
        drift_note: &mut Option<String>,
    ) -> Result<Outcome, StepError> {
        let (e, observed) = match read_inputs(ctx, Stage::Expanding).await? {
            Ok(inputs) => inputs,
            Err(m) => return Ok(Outcome::blocked(m)),
        };
        progress.merge(Progress {
            active_anchor: Some(e.to.summary()),
            active_issuer: e.issuer.first().map(Certificate::summary),
            foreign_roots: Some(foreign_roots(&observed.bundle, &e)),
            ..Default::default()
        });
        // A trust anchor Linkerd cannot use never enters the bundle.
        if let Some(m) = super::validate::anchor_block(&e.to, ctx.now, &ctx.spec.trust_anchor) {
            return Ok(Outcome::blocked(m));
        }
        let pods = meshed_pods(&ctx.client, &ctx.spec, ctx.pods.as_deref()).await?;
        // The guard runs even when the ConfigMap already looks expanded: pods that started
        // while someone else's bundle lacked the old root must be restarted first.
        let drift = match judge(&observed, &e, &pods, &ctx.spec.trust_roots) {
            Verdict::Block(m) => return Ok(Outcome::blocked(m)),
            Verdict::Restore { note, .. } => Some(note),
            Verdict::Holds => None,
        };
        let old: Vec<Certificate> = e.old.iter().filter_map(|o| o.cert.clone()).collect();
        match decide_expand(&observed.bundle, &observed.value, &old, &e.to, &e.issuer) {
            BundleDecision::Blocked(m) => Ok(Outcome::blocked(m)),
            decision => {
                // The accelerated refresh must be on the namespaces before any pod can be
                // admitted with the expanded bundle, and so before the status says
                // PropagatingTrustRoots (the user's cue to restart): pods admitted without
                // it would renew their certificates only on the normal schedule.
                super::refresh::publish_env_to_meshed_namespaces(ctx, &pods).await?;
                if let BundleDecision::Write(text) = decision {
                    write_bundle(&ctx.client, &ctx.spec.trust_roots, &text).await?;
                }
                *drift_note = drift;
                Ok(Outcome::Done)
            }
        }
    }
}

/// Waits, probing through a [`ProbeCache`] (only pods whose answer can have changed), until
/// every live certificate chains to the new root; then decides on a fresh probe of every
/// proxy before it drops the old roots.
#[derive(Default)]
pub struct ReduceBundle {
    probes: ProbeCache,
}

#[async_trait]
impl Step for ReduceBundle {
    fn name(&self) -> &str {
        names::REDUCE_BUNDLE
    }

    fn phase(&self) -> Phase {
        Phase::RefreshingControlPlane
    }

    fn timeout(&self) -> std::time::Duration {
        // Probes every workload pod.
        std::time::Duration::from_secs(300)
    }

    async fn run(&self, ctx: &StepContext) -> Result<StepReport, StepError> {
        // The approval first (spec.automation.approvals.beforeRootRemoval): nothing is
        // looked at or written before a person said so.
        use super::approval::{self, Gate};
        let approved = match approval::check(
            trust_rotation_crds::ApprovalGate::RootRemoval,
            &ctx.spec,
            &ctx.rotation,
            &ctx.approval,
            ctx.now,
        ) {
            Gate::Open => None,
            Gate::Awaiting(message) => return Ok(Outcome::blocked(message).into()),
            Gate::Approved(a) => Some(a),
        };
        // Outside the maintenance windows the old root stays: parked before any write (the
        // approval, if one came, is consumed and recorded all the same).
        if let Some(m) = ctx.window.park() {
            let mut report: StepReport = Outcome::blocked(m).into();
            if let Some(a) = approved {
                report = report.notice(approval::APPROVAL_CONSUMED, approval::consumed_note(&a));
                report.progress.approvals.push(a);
            }
            return Ok(report);
        }
        let mut progress = Progress::default();
        let mut report = match self.execute(ctx, &mut progress).await? {
            Reduce::Outcome(outcome) => outcome.with(progress),
            Reduce::Stopped(report) => *report,
        };
        if let Some(a) = approved {
            report = report.notice(approval::APPROVAL_CONSUMED, approval::consumed_note(&a));
            report.progress.approvals.push(a);
        }
        if report.outcome == Outcome::Done {
            // A chain per proxy is no use once the old roots are gone.
            self.probes.clear();
        }
        Ok(report)
    }
}

/// How one execution of ReduceBundle ended: an outcome, or the invariant's guard stopped it.
enum Reduce {
    Outcome(Outcome),
    Stopped(Box<StepReport>),
}

impl ReduceBundle {
    async fn execute(
        &self,
        ctx: &StepContext,
        progress: &mut Progress,
    ) -> Result<Reduce, StepError> {
        let (e, observed) = match read_inputs(ctx, Stage::Expanded).await? {
            Ok(inputs) => inputs,
            Err(m) => return Ok(Reduce::Outcome(Outcome::blocked(m))),
        };
        let Some(active_issuer) = e.issuer.first().cloned() else {
            return Err(StepError::permanent(
                ErrorCategory::InvalidCertificate,
                "the identity issuer Secret holds no certificate",
            ));
        };
        let desired = reduced_bundle(&observed.bundle, &e, ctx.spec.remove_unknown_roots);
        progress.merge(Progress {
            foreign_roots: Some(foreign_roots(&desired, &e)),
            ..Default::default()
        });
        if observed.value != desired.to_pem() {
            // Not reduced yet: the expanded bundle must still be whole before it is judged.
            if let Guard::Stop(report) = guard(ctx).await? {
                return Ok(Reduce::Stopped(report));
            }
            // Guard rail: probe every live proxy afresh, the control plane's included: a
            // certificate that does not chain to the new root breaks mTLS the moment a peer
            // trusts only the new root. None may be unreachable or unconverged.
            let pods: Vec<_> = meshed_pods(&ctx.client, &ctx.spec, ctx.pods.as_deref())
                .await?
                .into_iter()
                // A Terminating pod still serves until it is gone: its certificate must
                // chain to the new root too. A pod that never started holds none yet.
                .filter(|p| p.has_proxy && !p.never_started())
                .collect();
            let cfg = ctx.probe_config();
            let backoff = Backoff::for_refresh_interval(
                POLL,
                &ctx.spec.workload_certificate_refresh_interval,
            );
            let on_issuer = active_issuer.clone();
            let settled = move |o: &ProbeOutcome| cert_state(o, &on_issuer) == CertState::Active;
            // When every answer says yes, the decision to drop the old roots still rests on a
            // fresh probe of every proxy: the remembered answers are confirmed.
            let answers = look(&ctx.client, &cfg, &self.probes, pods, &settled, backoff)
                .await
                .confirmed(&ctx.client, &cfg, &self.probes, &settled, backoff)
                .await;
            // One record per pod: its state beside its answer (no copy of the pod per view).
            let mut results: Vec<(MeshedPod, CertState, ProbeOutcome)> = answers
                .into_iter()
                .map(|(p, o)| (p, cert_state(&o, &active_issuer), o))
                .collect();
            let tally_of = |results: &[(MeshedPod, CertState, ProbeOutcome)]| {
                cert_convergence_of(results.iter().map(|(p, s, _)| (p, s)))
            };
            let mut tally = tally_of(&results);
            let gone = gone_if_stalled(ctx, names::REDUCE_BUNDLE, &tally).await?;
            if !gone.is_empty() {
                results.retain(|(p, _, _)| !gone.contains(&p.pod));
                tally = tally_of(&results);
            }
            progress.merge(Progress {
                workload_certificates: Some(tally.to_status(Some(
                    k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(ctx.now),
                ))),
                ..Default::default()
            });
            let control_plane_unprobed: Vec<String> = results
                .iter()
                .filter(|(p, _, o)| {
                    p.control_plane && !matches!(o, ProbeOutcome::Chain(c) if !c.is_empty())
                })
                .map(|(p, _, o)| {
                    let why = match o {
                        ProbeOutcome::Unreachable(e) => format!("unreachable: {e}"),
                        ProbeOutcome::TimedOut => "timed out".to_string(),
                        ProbeOutcome::NoProxy => "no proxy".to_string(),
                        ProbeOutcome::Chain(_) => "presented no certificate".to_string(),
                        ProbeOutcome::Rejected(e) => format!("invalid: {e}"),
                    };
                    format!("{} ({why})", p.pod)
                })
                .collect();
            if let Some(block) = stuck_terminating_block(&tally, ctx.now) {
                return Ok(Reduce::Outcome(block));
            }
            if !tally.is_complete() || !control_plane_unprobed.is_empty() {
                let list: Vec<String> = tally
                    .unconverged
                    .iter()
                    .map(|p| format!("{} ({})", p.pod, describe(&p.state)))
                    .chain(control_plane_unprobed)
                    .take(10)
                    .collect();
                let commands = restart_commands(&tally, 5);
                let fix = if commands.is_empty() {
                    String::new()
                } else {
                    format!("; to move the workload pods now: {}", commands.join("; "))
                };
                return Ok(Reduce::Outcome(Outcome::wait(
                    format!(
                        "not reducing the trust bundle while pods are unconverged or unreachable ({}/{} workload pods converged): {}{fix}",
                        tally.converged,
                        tally.target,
                        list.join(", ")
                    ),
                    POLL,
                )));
            }
            let live: Vec<(String, Vec<Certificate>)> = results
                .into_iter()
                .filter_map(|(p, _, o)| match o {
                    ProbeOutcome::Chain(chain) => Some((p.pod.to_string(), chain)),
                    _ => None,
                })
                .collect();
            match decide_reduce(&observed.value, &desired, &e.issuer, &live) {
                BundleDecision::Blocked(m) => return Ok(Reduce::Outcome(Outcome::blocked(m))),
                BundleDecision::Unchanged => {}
                BundleDecision::Write(text) => {
                    // Realign the anchors first, then drop the old roots.
                    progress.merge(copy_current_anchor(ctx, &e.to).await?);
                    write_bundle(&ctx.client, &ctx.spec.trust_roots, &text).await?;
                    return Ok(Reduce::Outcome(Outcome::Done));
                }
            }
        }
        progress.merge(copy_current_anchor(ctx, &e.to).await?);
        Ok(Reduce::Outcome(Outcome::Done))
    }
}

/// Realigns the previous-anchor Secret on the current anchor; returns what the status shows.
async fn copy_current_anchor(
    ctx: &StepContext,
    new_root: &Certificate,
) -> Result<Progress, StepError> {
    let previous = read::previous_anchor(&ctx.client, &ctx.spec.previous_anchor).await?;
    if previous.as_ref() != Some(new_root) {
        write_previous_anchor(&ctx.client, &ctx.spec.previous_anchor, new_root).await?;
    }
    Ok(Progress {
        previous_anchor: Some(new_root.summary()),
        ..Default::default()
    })
}

/// A pod's certificate state for a status message.
pub fn describe(state: &CertState) -> String {
    match state {
        CertState::OtherIssuer { issuer_fingerprint } => format!(
            "certificate from issuer {}",
            issuer_fingerprint
                .as_deref()
                .map(short_fingerprint)
                .unwrap_or("unknown")
        ),
        other => match other.detail() {
            Some(d) => format!("{}: {d}", other.as_str()),
            None => other.as_str().to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::testing::{issued, root};
    use crate::rotation::invariant::OldRoot;

    #[test]
    fn expansion_adds_the_new_root_after_the_old_one_once() {
        let old = root("root");
        let new = root("root");
        let issuer = issued("identity", &old, true);
        let current = Bundle::from_certs([old.parsed()]);
        let BundleDecision::Write(text) = decide_expand(
            &current,
            &current.to_pem(),
            &[old.parsed()],
            &new.parsed(),
            &[issuer.parsed()],
        ) else {
            panic!("expected a write");
        };
        let written = Bundle::parse(&text).unwrap();
        assert_eq!(
            written.fingerprints(),
            vec![old.parsed().fingerprint(), new.parsed().fingerprint()]
        );
        // Re-running on the result writes nothing.
        assert_eq!(
            decide_expand(
                &written,
                &text,
                &[old.parsed()],
                &new.parsed(),
                &[issuer.parsed()]
            ),
            BundleDecision::Unchanged
        );
        // Same roots but not normalised text: rewritten in canonical form.
        let messy = format!("\n{text}\n");
        assert_eq!(
            decide_expand(
                &written,
                &messy,
                &[old.parsed()],
                &new.parsed(),
                &[issuer.parsed()]
            ),
            BundleDecision::Write(text)
        );
    }

    #[test]
    fn expansion_is_the_union_with_the_old_root_whatever_the_bundle_holds() {
        let old = root("root");
        let new = root("root");
        let peer = root("peer");
        let issuer = issued("identity", &old, true);
        // A foreign root first: it keeps its place, the old root is not taken from position.
        let current = Bundle::from_certs([peer.parsed(), old.parsed()]);
        let BundleDecision::Write(text) = decide_expand(
            &current,
            &current.to_pem(),
            &[old.parsed()],
            &new.parsed(),
            &[issuer.parsed()],
        ) else {
            panic!("expected a write");
        };
        assert_eq!(
            Bundle::parse(&text).unwrap().fingerprints(),
            vec![
                peer.parsed().fingerprint(),
                old.parsed().fingerprint(),
                new.parsed().fingerprint()
            ]
        );
        // The bundle already rewritten to the new root only (a bootstrap re-run): the old
        // root comes back from the previous-anchor Secret.
        let only_new = Bundle::from_certs([new.parsed()]);
        let BundleDecision::Write(text) = decide_expand(
            &only_new,
            &only_new.to_pem(),
            &[old.parsed()],
            &new.parsed(),
            &[issuer.parsed()],
        ) else {
            panic!("expected a write");
        };
        let written = Bundle::parse(&text).unwrap();
        assert!(
            written.contains(old.parsed().fingerprint())
                && written.contains(new.parsed().fingerprint())
        );
    }

    #[test]
    fn expansion_refuses_when_the_issuer_is_unanchored() {
        let old = root("root");
        let new = root("root");
        let stranger = root("other");
        let issuer = issued("identity", &stranger, true);
        let current = Bundle::from_certs([old.parsed()]);
        assert!(matches!(
            decide_expand(&current, &current.to_pem(), &[old.parsed()], &new.parsed(), &[issuer.parsed()]),
            BundleDecision::Blocked(m) if m.contains("identity issuer")
        ));
    }

    fn expectation(old: &crate::pki::testing::Ca, new: &crate::pki::testing::Ca) -> Expectation {
        Expectation {
            old: vec![OldRoot {
                fingerprint: old.parsed().fingerprint().to_string(),
                cert: Some(old.parsed()),
            }],
            to: new.parsed(),
            issuer: vec![],
            stage: Stage::Expanded,
            propagated: true,
        }
    }

    #[test]
    fn the_reduction_removes_exactly_the_old_roots_unless_told_otherwise() {
        let old = root("root");
        let new = root("root");
        let peer = root("peer");
        let e = expectation(&old, &new);
        let expanded = Bundle::from_certs([peer.parsed(), old.parsed(), new.parsed()]);
        assert_eq!(
            reduced_bundle(&expanded, &e, false).fingerprints(),
            vec![peer.parsed().fingerprint(), new.parsed().fingerprint()]
        );
        assert_eq!(
            reduced_bundle(&expanded, &e, true).fingerprints(),
            vec![new.parsed().fingerprint()]
        );
    }

    #[test]
    fn reduction_only_when_issuer_and_every_live_cert_moved() {
        let old = root("root");
        let new = root("root");
        let old_issuer = issued("identity", &old, true);
        let new_issuer = issued("identity", &new, true);
        let both = Bundle::from_certs([old.parsed(), new.parsed()]).to_pem();
        let fresh = (
            "app/a".to_string(),
            vec![
                issued("a", &new_issuer, false).parsed(),
                new_issuer.parsed(),
            ],
        );
        let stale = (
            "app/b".to_string(),
            vec![
                issued("b", &old_issuer, false).parsed(),
                old_issuer.parsed(),
            ],
        );
        let only_new = Bundle::from_certs([new.parsed()]);
        assert!(matches!(
            decide_reduce(
                &both,
                &only_new,
                &[old_issuer.parsed()],
                std::slice::from_ref(&fresh)
            ),
            BundleDecision::Blocked(_)
        ));
        assert!(matches!(
            decide_reduce(&both, &only_new, &[new_issuer.parsed()], &[fresh.clone(), stale]),
            BundleDecision::Blocked(m) if m.contains("app/b")
        ));
        assert_eq!(
            decide_reduce(
                &both,
                &only_new,
                &[new_issuer.parsed()],
                std::slice::from_ref(&fresh)
            ),
            BundleDecision::Write(only_new.to_pem())
        );
        assert_eq!(
            decide_reduce(
                &only_new.to_pem(),
                &only_new,
                &[new_issuer.parsed()],
                &[fresh]
            ),
            BundleDecision::Unchanged
        );
    }
}
