//! Synced: a root in the anchor Secret that the trust bundle lacks starts a rotation.

use crate::bundle::Bundle;
use crate::pki::{short_fingerprint, Certificate};
use crate::snapshot::{
    missing_bundle_message, read_anchor, read_bundle, read_issuer, read_previous_anchor,
};
use crate::step::{Progress, StepError};
use crate::workflow::{RotationStart, SyncedView, Trigger};
use async_trait::async_trait;
use trust_rotation_crds::TrustAnchorRotationSpec;

/// Watches the trust anchor while no rotation is in progress.
pub struct AnchorTrigger;

/// Whether the anchor needs a rotation: it does when the bundle lacks its fingerprint, or
/// when the bundle still holds the previous anchor (kept in the previous-anchor Secret) next
/// to it, which is a rotation interrupted after its status was lost: the workflow's steps
/// are idempotent and guarded, so running it again finishes that rotation safely. Any other
/// extra root is left alone (it is someone else's).
pub fn decide_start(
    anchor: &Certificate,
    bundle: &Bundle,
    previous: Option<&Certificate>,
) -> Option<RotationStart> {
    if bundle.contains(anchor.fingerprint()) {
        let prev = previous.filter(|p| p != &anchor && bundle.contains(p.fingerprint()))?;
        return Some(RotationStart {
            trigger: format!(
                "the trust bundle still holds the previous anchor {} next to the current anchor {}: finishing an interrupted rotation",
                short_fingerprint(prev.fingerprint()),
                short_fingerprint(anchor.fingerprint())
            ),
            from_anchor: Some(prev.fingerprint().to_string()),
            to_anchor: Some(anchor.fingerprint().to_string()),
        });
    }
    let from = bundle.fingerprints().first().map(|f| f.to_string());
    Some(RotationStart {
        trigger: format!(
            "trust anchor renewed: {} is not in the trust bundle{}",
            short_fingerprint(anchor.fingerprint()),
            from.as_deref()
                .map(|f| format!(" (which holds {})", short_fingerprint(f)))
                .unwrap_or_default()
        ),
        from_anchor: from,
        to_anchor: Some(anchor.fingerprint().to_string()),
    })
}

#[async_trait]
impl Trigger for AnchorTrigger {
    async fn observe(
        &self,
        client: &kube::Client,
        spec: &TrustAnchorRotationSpec,
        pods: Option<&dyn crate::snapshot::PodSource>,
    ) -> Result<SyncedView, StepError> {
        let anchor = read_anchor(client, &spec.trust_anchor).await?;
        let previous = read_previous_anchor(client, &spec.previous_anchor).await?;
        let issuer = read_issuer(client, &spec.identity_issuer).await.ok();
        let progress = Progress {
            active_anchor: Some(anchor.summary()),
            previous_anchor: previous.as_ref().map(Certificate::summary),
            active_issuer: issuer
                .as_ref()
                .and_then(|c| c.first())
                .map(Certificate::summary),
            ..Default::default()
        };
        let Some(observed) = read_bundle(client, &spec.trust_roots).await? else {
            return Ok(SyncedView {
                progress,
                start: None,
                blocked: Some(missing_bundle_message(&spec.trust_roots)),
            });
        };
        // While Synced, the counts say how many pods carry the bundle (all, normally).
        let pods = crate::snapshot::meshed_pods(client, spec, pods).await?;
        let tally = crate::convergence::bundle_convergence(&pods, &observed.value);
        let progress = Progress {
            trust_bundle: Some(tally.to_status(None)),
            ..progress
        };
        Ok(SyncedView {
            progress,
            start: decide_start(&anchor, &observed.bundle, previous.as_ref()),
            blocked: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::testing::root;

    #[test]
    fn a_root_missing_from_the_bundle_starts_a_rotation() {
        let old = root("root").parsed();
        let new = root("root").parsed();
        assert_eq!(
            decide_start(&old, &Bundle::from_certs([old.clone()]), None),
            None
        );
        assert_eq!(
            decide_start(&old, &Bundle::from_certs([old.clone()]), Some(&old)),
            None
        );
        // A bundle holding the anchor and a root that is not ours: left alone.
        let foreign = root("other").parsed();
        let both = Bundle::from_certs([foreign.clone(), new.clone()]);
        assert_eq!(decide_start(&new, &both, Some(&old)), None);
        assert_eq!(decide_start(&new, &both, None), None);
        // Old + new with the old one recorded as previous anchor: an interrupted rotation.
        let expanded = Bundle::from_certs([old.clone(), new.clone()]);
        let resume = decide_start(&new, &expanded, Some(&old)).unwrap();
        assert_eq!(resume.from_anchor.as_deref(), Some(old.fingerprint()));
        assert_eq!(resume.to_anchor.as_deref(), Some(new.fingerprint()));
        assert!(resume.trigger.contains("interrupted"), "{}", resume.trigger);
        let start = decide_start(&new, &Bundle::from_certs([old.clone()]), None).unwrap();
        assert_eq!(start.from_anchor.as_deref(), Some(old.fingerprint()));
        assert_eq!(start.to_anchor.as_deref(), Some(new.fingerprint()));
        assert!(
            start.trigger.contains(short_fingerprint(new.fingerprint())),
            "{}",
            start.trigger
        );
    }
}
