//! CopyPreviousAnchor: the old root goes into the previous-anchor Secret (certificate only,
//! never a private key), so that the old root stays on record while both are trusted.

use super::names;
use crate::bundle::Bundle;
use crate::pki::{short_fingerprint, Certificate};
use crate::read;
use crate::runner::telemetry::TracedWrite as _;
use crate::runner::FIELD_MANAGER;
use crate::step::{Outcome, Progress, Step, StepContext, StepError, StepReport};
use async_trait::async_trait;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use trust_rotation_crds::{Phase, SecretRef};

/// What CopyPreviousAnchor should do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CopyDecision {
    /// The Secret already holds the old root.
    AlreadyCopied,
    /// Write this certificate.
    Write(Box<Certificate>),
    /// Neither the bundle nor the Secret holds the old root.
    Blocked(String),
}

/// Picks the old root: the rotation's `from_anchor` from the bundle, else the bundle's first
/// root that is not the new one.
pub fn decide_copy(
    bundle: &Bundle,
    previous: Option<&Certificate>,
    from_anchor: Option<&str>,
    to_anchor: Option<&str>,
) -> CopyDecision {
    let wanted = bundle.certs().iter().find(|c| match from_anchor {
        Some(fp) => c.fingerprint() == fp,
        None => Some(c.fingerprint()) != to_anchor,
    });
    match (wanted, previous) {
        (Some(w), Some(p)) if w == p => CopyDecision::AlreadyCopied,
        (Some(w), _) => CopyDecision::Write(Box::new(w.clone())),
        (None, Some(p)) if from_anchor.is_none_or(|fp| fp == p.fingerprint()) => CopyDecision::AlreadyCopied,
        (None, _) => CopyDecision::Blocked(format!(
            "the previous trust anchor{} is in neither the trust bundle nor the previous-anchor Secret, so it cannot be kept \
             while pods still trust it; restore it into the trust bundle ConfigMap",
            from_anchor.map(|f| format!(" {}", short_fingerprint(f))).unwrap_or_default()
        )),
    }
}

/// Writes `cert` as `tls.crt` and `ca.crt` of the previous-anchor Secret (server-side apply;
/// the Secret's type and any other keys are left to whoever set them).
pub async fn write_previous_anchor(
    client: &kube::Client,
    r: &SecretRef,
    cert: &Certificate,
) -> Result<(), StepError> {
    use k8s_openapi::ByteString;
    let api: Api<Secret> = Api::namespaced(client.clone(), &r.namespace);
    let pem = cert.to_pem();
    let patch = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": r.name,
            "namespace": r.namespace,
            "labels": {"app.kubernetes.io/managed-by": FIELD_MANAGER},
        },
        "data": {
            "tls.crt": ByteString(pem.clone().into_bytes()),
            "ca.crt": ByteString(pem.into_bytes()),
        },
    });
    api.patch(
        &r.name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .traced_write("apply", "Secret", &r.namespace, &r.name)
    .await
    .map(|_| ())
    .map_err(|e| match &e {
        // The operator may update this Secret, never create one (its RBAC grants no Secret
        // creation): a missing Secret is for the person to create.
        kube::Error::Api(s) if s.code == 403 || s.code == 404 => StepError::permanent(
            crate::error::ErrorCategory::MissingResource,
            format!(
                "cannot write the previous-anchor Secret {ns}/{name} ({}): the operator updates this Secret but may not \
                 create it; the trust-rotation-operator chart creates it empty, or create it yourself with \
                 `kubectl -n {ns} create secret generic {name}`",
                s.message,
                ns = r.namespace,
                name = r.name
            ),
        ),
        _ => StepError::from_kube(format!("writing Secret {}/{}", r.namespace, r.name), e),
    })
}

pub struct CopyPreviousAnchor;

#[async_trait]
impl Step for CopyPreviousAnchor {
    fn name(&self) -> &str {
        names::COPY_PREVIOUS_ANCHOR
    }

    fn phase(&self) -> Phase {
        Phase::RefreshingControlPlane
    }

    async fn run(&self, ctx: &StepContext) -> Result<StepReport, StepError> {
        let mut progress = Progress::default();
        let outcome = self.execute(ctx, &mut progress).await?;
        Ok(outcome.with(progress))
    }
}

impl CopyPreviousAnchor {
    async fn execute(
        &self,
        ctx: &StepContext,
        progress: &mut Progress,
    ) -> Result<Outcome, StepError> {
        // Both reads at once (one round trip on the path from a renewed anchor to the
        // expanded bundle); their errors are judged in this order.
        let (bundle, previous) = tokio::join!(
            read::trust_bundle(&ctx.client, &ctx.spec.trust_roots),
            read::previous_anchor(&ctx.client, &ctx.spec.previous_anchor),
        );
        let observed = match read::split_missing(bundle)? {
            Ok(b) => b,
            Err(m) => return Ok(Outcome::blocked(m)),
        };
        let previous = previous?;
        match decide_copy(
            &observed.bundle,
            previous.as_ref(),
            ctx.rotation.from_anchor.as_deref(),
            ctx.rotation.to_anchor.as_deref(),
        ) {
            CopyDecision::AlreadyCopied => {
                progress.merge(Progress {
                    previous_anchor: previous.as_ref().map(Certificate::summary),
                    ..Default::default()
                });
                Ok(Outcome::Done)
            }
            CopyDecision::Write(cert) => {
                write_previous_anchor(&ctx.client, &ctx.spec.previous_anchor, &cert).await?;
                progress.merge(Progress {
                    previous_anchor: Some(cert.summary()),
                    ..Default::default()
                });
                Ok(Outcome::Done)
            }
            CopyDecision::Blocked(m) => Ok(Outcome::blocked(m)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::testing::root;

    #[test]
    fn copies_the_old_root_once() {
        let old = root("root").parsed();
        let new = root("root").parsed();
        let bundle = Bundle::from_certs([old.clone()]);
        let (from, to) = (Some(old.fingerprint()), Some(new.fingerprint()));
        assert_eq!(
            decide_copy(&bundle, None, from, to),
            CopyDecision::Write(Box::new(old.clone()))
        );
        assert_eq!(
            decide_copy(&bundle, Some(&new), from, to),
            CopyDecision::Write(Box::new(old.clone()))
        );
        assert_eq!(
            decide_copy(&bundle, Some(&old), from, to),
            CopyDecision::AlreadyCopied
        );
        // Without a recorded from-anchor, the first root that is not the new one.
        let both = Bundle::from_certs([new.clone(), old.clone()]);
        assert_eq!(
            decide_copy(&both, None, None, to),
            CopyDecision::Write(Box::new(old.clone()))
        );
        // Resumed after the bundle lost the old root, but the Secret has it: done.
        let only_new = Bundle::from_certs([new.clone()]);
        assert_eq!(
            decide_copy(&only_new, Some(&old), from, to),
            CopyDecision::AlreadyCopied
        );
        assert!(matches!(
            decide_copy(&only_new, None, from, to),
            CopyDecision::Blocked(_)
        ));
    }
}
