//! ReconcileBundle (old + new roots) and ReduceBundle (the new root only).

use super::guard::{check_bundle_write, check_superset};
use super::{anchor::write_previous_anchor, current_new_root, names, POLL};
use crate::bundle::Bundle;
use crate::convergence::{cert_convergence, cert_state, CertState};
use crate::pki::{short_fingerprint, Certificate};
use crate::probe::{probe_pods, ProbeOutcome};
use crate::runner::FIELD_MANAGER;
use crate::snapshot::{
    meshed_pods, missing_bundle_message, read_bundle, read_issuer, read_previous_anchor,
    BundleObservation,
};
use crate::step::{Outcome, Progress, Step, StepContext, StepError};
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

/// The expanded bundle: everything the current bundle holds plus the new root, normalised.
/// Guard: it keeps every current root and still anchors the current issuer.
pub fn decide_expand(
    current: &Bundle,
    current_value: &str,
    new_root: &Certificate,
    issuer_chain: &[Certificate],
) -> BundleDecision {
    let desired = Bundle::from_certs(current.certs().iter().cloned().chain([new_root.clone()]));
    let text = desired.to_pem();
    if current.contains(new_root.fingerprint()) && current_value == text {
        return BundleDecision::Unchanged;
    }
    if let Err(e) = check_superset(current, &desired)
        .and_then(|()| check_bundle_write(&desired, issuer_chain, &[]))
    {
        return BundleDecision::Blocked(e);
    }
    BundleDecision::Write(text)
}

/// The reduced bundle (the new root only), if the guard rails allow it: the issuer and every
/// live workload certificate chain to the new root, and every workload pod was probed.
pub fn decide_reduce(
    current_value: &str,
    new_root: &Certificate,
    issuer_chain: &[Certificate],
    live: &[(String, Vec<Certificate>)],
) -> BundleDecision {
    let desired = Bundle::from_certs([new_root.clone()]);
    let text = desired.to_pem();
    if current_value == text {
        return BundleDecision::Unchanged;
    }
    match check_bundle_write(&desired, issuer_chain, live) {
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
    .await
    .map(|_| ())
    .map_err(|e| StepError::from_kube(format!("writing ConfigMap {}/{}", r.namespace, r.name), e))
}

fn trust_manager_message(r: &ConfigMapRef) -> String {
    format!(
        "ConfigMap {}/{} is owned by a trust-manager Bundle, which would overwrite the operator's writes: \
         remove the Bundle targeting it (the operator manages the trust roots) and the rotation continues",
        r.namespace, r.name
    )
}

/// What both bundle steps read before deciding.
struct BundleInputs {
    new_root: Certificate,
    observed: BundleObservation,
    issuer: Vec<Certificate>,
}

/// Reads the new root, the bundle (which must exist and not be managed by trust-manager) and
/// the issuer chain; `Err` is the message the step blocks with.
async fn read_inputs(ctx: &StepContext) -> Result<Result<BundleInputs, String>, StepError> {
    let new_root = match current_new_root(ctx).await? {
        Ok(c) => c,
        Err(m) => return Ok(Err(m)),
    };
    let Some(observed) = read_bundle(&ctx.client, &ctx.spec.trust_roots).await? else {
        return Ok(Err(missing_bundle_message(&ctx.spec.trust_roots)));
    };
    if observed.trust_manager {
        return Ok(Err(trust_manager_message(&ctx.spec.trust_roots)));
    }
    let issuer = read_issuer(&ctx.client, &ctx.spec.identity_issuer).await?;
    Ok(Ok(BundleInputs {
        new_root,
        observed,
        issuer,
    }))
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

    async fn run(&self, ctx: &StepContext) -> Result<Outcome, StepError> {
        let BundleInputs {
            new_root,
            observed,
            issuer,
        } = match read_inputs(ctx).await? {
            Ok(inputs) => inputs,
            Err(m) => return Ok(Outcome::blocked(m)),
        };
        ctx.report(Progress {
            active_anchor: Some(new_root.summary()),
            active_issuer: issuer.first().map(Certificate::summary),
            ..Default::default()
        });
        match decide_expand(&observed.bundle, &observed.value, &new_root, &issuer) {
            BundleDecision::Blocked(m) => Ok(Outcome::blocked(m)),
            decision => {
                // The accelerated refresh must be on the namespaces before any pod can be
                // admitted with the expanded bundle, and so before the status says
                // PropagatingTrustRoots (the user's cue to restart): pods admitted without
                // it would renew their certificates only on the normal schedule.
                let pods = meshed_pods(&ctx.client, &ctx.spec, ctx.pods.as_deref()).await?;
                super::refresh::publish_env_to_meshed_namespaces(ctx, &pods).await?;
                if let BundleDecision::Write(text) = decision {
                    write_bundle(&ctx.client, &ctx.spec.trust_roots, &text).await?;
                }
                Ok(Outcome::Done)
            }
        }
    }
}

pub struct ReduceBundle;

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

    async fn run(&self, ctx: &StepContext) -> Result<Outcome, StepError> {
        let BundleInputs {
            new_root,
            observed,
            issuer,
        } = match read_inputs(ctx).await? {
            Ok(inputs) => inputs,
            Err(m) => return Ok(Outcome::blocked(m)),
        };
        let Some(active_issuer) = issuer.first().cloned() else {
            return Err(StepError::permanent(
                "invalid_certificate",
                "the identity issuer Secret holds no certificate",
            ));
        };
        // Guard rail: probe every workload pod afresh; none may be unreachable or unconverged.
        let reduced = Bundle::from_certs([new_root.clone()]).to_pem();
        if observed.value != reduced {
            // Every live proxy, the control plane's included: a certificate that does not
            // chain to the new root breaks mTLS the moment a peer trusts only the new root.
            let pods: Vec<_> = meshed_pods(&ctx.client, &ctx.spec, ctx.pods.as_deref())
                .await?
                .into_iter()
                .filter(|p| !p.deleting && p.has_proxy)
                .collect();
            let judge_by = active_issuer.clone();
            let probed = probe_pods(
                &ctx.client,
                pods,
                &ctx.probe_config(),
                move |o| (cert_state(&o, &judge_by), o),
                || {},
            )
            .await;
            let (judged, results): (Vec<_>, Vec<_>) = probed
                .into_iter()
                .map(|(p, (state, outcome))| ((p.clone(), state), (p, outcome)))
                .unzip();
            let tally = cert_convergence(&judged);
            ctx.report(Progress {
                workload_certificates: Some(tally.to_status(Some(
                    k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(ctx.now),
                ))),
                ..Default::default()
            });
            let control_plane_unprobed: Vec<String> = results
                .iter()
                .filter(|(p, o)| {
                    p.control_plane && !matches!(o, ProbeOutcome::Chain(c) if !c.is_empty())
                })
                .map(|(p, o)| {
                    let why = match o {
                        ProbeOutcome::Unreachable(e) => format!("unreachable: {e}"),
                        ProbeOutcome::TimedOut => "timed out".to_string(),
                        ProbeOutcome::NoProxy => "no proxy".to_string(),
                        ProbeOutcome::Chain(_) => "presented no certificate".to_string(),
                    };
                    format!("{} ({why})", p.pod)
                })
                .collect();
            if !tally.is_complete() || !control_plane_unprobed.is_empty() {
                let list: Vec<String> = tally
                    .unconverged
                    .iter()
                    .map(|p| format!("{} ({})", p.pod, describe(&p.state)))
                    .chain(control_plane_unprobed)
                    .take(10)
                    .collect();
                return Ok(Outcome::wait(
                    format!(
                        "not reducing the trust bundle while pods are unconverged or unreachable ({}/{} workload pods converged): {}",
                        tally.converged,
                        tally.target,
                        list.join(", ")
                    ),
                    POLL,
                ));
            }
            let live: Vec<(String, Vec<Certificate>)> = results
                .into_iter()
                .filter_map(|(p, o)| match o {
                    ProbeOutcome::Chain(chain) => Some((p.pod.to_string(), chain)),
                    _ => None,
                })
                .collect();
            match decide_reduce(&observed.value, &new_root, &issuer, &live) {
                BundleDecision::Blocked(m) => return Ok(Outcome::blocked(m)),
                BundleDecision::Unchanged => {}
                BundleDecision::Write(text) => {
                    // Realign the anchors first, then drop the old root.
                    copy_current_anchor(ctx, &new_root).await?;
                    write_bundle(&ctx.client, &ctx.spec.trust_roots, &text).await?;
                    return Ok(Outcome::Done);
                }
            }
        }
        copy_current_anchor(ctx, &new_root).await?;
        Ok(Outcome::Done)
    }
}

async fn copy_current_anchor(ctx: &StepContext, new_root: &Certificate) -> Result<(), StepError> {
    let previous = read_previous_anchor(&ctx.client, &ctx.spec.previous_anchor).await?;
    if previous.as_ref() != Some(new_root) {
        write_previous_anchor(&ctx.client, &ctx.spec.previous_anchor, new_root).await?;
    }
    ctx.report(Progress {
        previous_anchor: Some(new_root.summary()),
        ..Default::default()
    });
    Ok(())
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

    #[test]
    fn expansion_adds_the_new_root_after_the_old_one_once() {
        let old = root("root");
        let new = root("root");
        let issuer = issued("identity", &old, true);
        let current = Bundle::from_certs([old.parsed()]);
        let BundleDecision::Write(text) = decide_expand(
            &current,
            &current.to_pem(),
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
            decide_expand(&written, &text, &new.parsed(), &[issuer.parsed()]),
            BundleDecision::Unchanged
        );
        // Same roots but not normalised text: rewritten in canonical form.
        let messy = format!("\n{text}\n");
        assert_eq!(
            decide_expand(&written, &messy, &new.parsed(), &[issuer.parsed()]),
            BundleDecision::Write(text)
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
            decide_expand(&current, &current.to_pem(), &new.parsed(), &[issuer.parsed()]),
            BundleDecision::Blocked(m) if m.contains("identity issuer")
        ));
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
        assert!(matches!(
            decide_reduce(
                &both,
                &new.parsed(),
                &[old_issuer.parsed()],
                std::slice::from_ref(&fresh)
            ),
            BundleDecision::Blocked(_)
        ));
        assert!(matches!(
            decide_reduce(&both, &new.parsed(), &[new_issuer.parsed()], &[fresh.clone(), stale]),
            BundleDecision::Blocked(m) if m.contains("app/b")
        ));
        let only_new = Bundle::from_certs([new.parsed()]).to_pem();
        assert_eq!(
            decide_reduce(
                &both,
                &new.parsed(),
                &[new_issuer.parsed()],
                std::slice::from_ref(&fresh)
            ),
            BundleDecision::Write(only_new.clone())
        );
        assert_eq!(
            decide_reduce(&only_new, &new.parsed(), &[new_issuer.parsed()], &[fresh]),
            BundleDecision::Unchanged
        );
    }
}
