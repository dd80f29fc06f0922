//! Synced: a root in the anchor Secret that the trust bundle lacks starts a rotation.

use crate::bundle::Bundle;
use crate::pki::{anchoring_roots, short_fingerprint, Certificate};
use crate::read;
use crate::step::{Progress, StepError};
use crate::workflow::{RotationStart, SyncedView, Trigger};
use async_trait::async_trait;
use trust_rotation_crds::TrustAnchorRotationSpec;

/// Watches the trust anchor while no rotation is in progress.
pub struct AnchorTrigger;

/// Whether the anchor needs a rotation, and from which root.
///
/// - The bundle lacks the anchor: a rotation to it. The root it moves from is identified by
///   the previous-anchor Secret (the operator realigns it on the anchor at the end of every
///   rotation) or else by the issuer's chain, never by its position in the bundle: other roots
///   there are someone else's and stay.
/// - The bundle holds the anchor and still the previous anchor next to it: a rotation
///   interrupted after its status was lost (deleted and re-created, restored from a backup,
///   edited); the steps are idempotent and guarded, so running it again finishes it.
/// - The bundle holds the anchor but no longer anchors the issuer, which chains to the
///   previous anchor (someone rewrote the bundle before the issuer moved): a rotation from
///   that root, whose expansion puts it back (or blocks, naming the pods already at risk).
pub fn decide_start(
    anchor: &Certificate,
    bundle: &Bundle,
    previous: Option<&Certificate>,
    issuer: &[Certificate],
) -> Option<RotationStart> {
    let previous = previous.filter(|p| *p != anchor);
    let issuer_root = |roots: &[Certificate]| -> Option<Certificate> {
        if issuer.is_empty() {
            return None;
        }
        anchoring_roots(issuer, roots)
            .into_iter()
            .find(|r| *r != anchor)
            .cloned()
    };
    let start = |trigger: String, from: Option<&Certificate>| RotationStart {
        trigger,
        from_anchor: from.map(|f| f.fingerprint().to_string()),
        to_anchor: Some(anchor.fingerprint().to_string()),
    };
    if bundle.contains(anchor.fingerprint()) {
        if let Some(prev) = previous.filter(|p| bundle.contains(p.fingerprint())) {
            return Some(start(
                format!(
                    "the trust bundle still holds the previous anchor {} next to the current anchor {}: finishing an interrupted rotation",
                    short_fingerprint(prev.fingerprint()),
                    short_fingerprint(anchor.fingerprint())
                ),
                Some(prev),
            ));
        }
        let lost = previous
            .filter(|p| {
                !issuer.is_empty() && anchoring_roots(issuer, std::slice::from_ref(*p)).len() == 1
            })
            .filter(|_| anchoring_roots(issuer, bundle.certs()).is_empty())?;
        return Some(start(
            format!(
                "the trust bundle holds the anchor {} but lost the previous anchor {} that the identity issuer still chains to: \
                 rotating again so that it is restored until the issuer moves",
                short_fingerprint(anchor.fingerprint()),
                short_fingerprint(lost.fingerprint())
            ),
            Some(lost),
        ));
    }
    let from = previous
        .filter(|p| bundle.contains(p.fingerprint()))
        .cloned()
        .or_else(|| issuer_root(bundle.certs()))
        .or_else(|| previous.cloned());
    Some(start(
        format!(
            "trust anchor renewed: {} is not in the trust bundle{}",
            short_fingerprint(anchor.fingerprint()),
            from.as_ref()
                .map(|f| format!(
                    " (the rotation moves from {})",
                    short_fingerprint(f.fingerprint())
                ))
                .unwrap_or_else(|| {
                    " (no root of the bundle anchors the identity issuer: nothing to keep)".into()
                })
        ),
        from.as_ref(),
    ))
}

#[async_trait]
impl Trigger for AnchorTrigger {
    async fn observe(
        &self,
        client: &kube::Client,
        spec: &TrustAnchorRotationSpec,
        pods: Option<&dyn crate::snapshot::PodSource>,
    ) -> Result<SyncedView, StepError> {
        // Every read at once (the look that starts a rotation is on the path from a renewed
        // anchor to the expanded bundle); their errors are judged in this order.
        let (anchor, previous, issuer, bundle) = tokio::join!(
            read::anchor(client, &spec.trust_anchor),
            read::previous_anchor(client, &spec.previous_anchor),
            read::issuer_chain(client, &spec.identity_issuer),
            read::trust_bundle(client, &spec.trust_roots),
        );
        let (anchor, previous, issuer) = (anchor?, previous?, issuer.ok());
        let validity = crate::schedule::AnchorValidity {
            fingerprint: anchor.fingerprint().to_string(),
            not_before: anchor.not_before(),
            not_after: anchor.not_after(),
        };
        let progress = Progress {
            active_anchor: Some(anchor.summary()),
            previous_anchor: previous.as_ref().map(Certificate::summary),
            active_issuer: issuer
                .as_ref()
                .and_then(|c| c.first())
                .map(Certificate::summary),
            ..Default::default()
        };
        let observed = match read::split_missing(bundle)? {
            Ok(b) => b,
            Err(m) => {
                return Ok(SyncedView {
                    progress,
                    start: None,
                    blocked: Some(m),
                    ..Default::default()
                })
            }
        };
        // While Synced, the counts say how many pods carry the bundle (all, normally).
        let pods = crate::snapshot::meshed_pods(client, spec, pods).await?;
        let tally = crate::convergence::bundle_convergence(&pods, &observed.value);
        let progress = Progress {
            trust_bundle: Some(tally.to_status(None)),
            foreign_roots: Some(
                observed
                    .bundle
                    .certs()
                    .iter()
                    .filter(|c| *c != &anchor && Some(*c) != previous.as_ref())
                    .map(Certificate::summary)
                    .collect(),
            ),
            ..progress
        };
        let start = decide_start(
            &anchor,
            &observed.bundle,
            previous.as_ref(),
            issuer.as_deref().unwrap_or_default(),
        );
        // A rotation does not start on a ConfigMap another controller would put back.
        if let (Some(_), Some(owner)) = (&start, &observed.owner) {
            return Ok(SyncedView {
                progress,
                start: None,
                blocked: Some(owner.blocking_message(&spec.trust_roots)),
                ..Default::default()
            });
        }
        Ok(SyncedView {
            progress,
            start,
            blocked: None,
            anchor: Some(validity),
            scheduled: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::testing::{issued, root};

    #[test]
    fn a_root_missing_from_the_bundle_starts_a_rotation() {
        let old = root("root");
        let new = root("root").parsed();
        let issuer = [issued("identity", &old, true).parsed()];
        let old = old.parsed();
        assert_eq!(
            decide_start(&old, &Bundle::from_certs([old.clone()]), None, &issuer),
            None
        );
        assert_eq!(
            decide_start(
                &old,
                &Bundle::from_certs([old.clone()]),
                Some(&old),
                &issuer
            ),
            None
        );
        // A bundle holding the anchor and a root that is not ours: left alone.
        let foreign = root("other").parsed();
        let both = Bundle::from_certs([foreign.clone(), new.clone()]);
        let new_issuer = [issued("identity", &root("x"), true).parsed()];
        assert_eq!(decide_start(&new, &both, Some(&old), &[]), None);
        assert_eq!(decide_start(&new, &both, None, &new_issuer), None);
        // Old + new with the old one recorded as previous anchor: an interrupted rotation.
        let expanded = Bundle::from_certs([old.clone(), new.clone()]);
        let resume = decide_start(&new, &expanded, Some(&old), &issuer).unwrap();
        assert_eq!(resume.from_anchor.as_deref(), Some(old.fingerprint()));
        assert_eq!(resume.to_anchor.as_deref(), Some(new.fingerprint()));
        assert!(resume.trigger.contains("interrupted"), "{}", resume.trigger);
        let start = decide_start(&new, &Bundle::from_certs([old.clone()]), None, &issuer).unwrap();
        assert_eq!(start.from_anchor.as_deref(), Some(old.fingerprint()));
        assert_eq!(start.to_anchor.as_deref(), Some(new.fingerprint()));
        assert!(
            start.trigger.contains(short_fingerprint(new.fingerprint())),
            "{}",
            start.trigger
        );
    }

    #[test]
    fn the_old_root_is_found_by_the_issuer_chain_not_by_position() {
        let old = root("root");
        let issuer = [issued("identity", &old, true).parsed()];
        let (old, new, peer) = (old.parsed(), root("root").parsed(), root("peer").parsed());
        // A multicluster peer's root first in the bundle, no previous anchor recorded yet.
        let bundle = Bundle::from_certs([peer.clone(), old.clone()]);
        let start = decide_start(&new, &bundle, None, &issuer).unwrap();
        assert_eq!(start.from_anchor.as_deref(), Some(old.fingerprint()));
        // The previous-anchor Secret wins when it is in the bundle.
        let start = decide_start(&new, &bundle, Some(&old), &[]).unwrap();
        assert_eq!(start.from_anchor.as_deref(), Some(old.fingerprint()));
        // Nothing identifies it: no root is taken for the old one.
        let start = decide_start(&new, &Bundle::from_certs([peer.clone()]), None, &[]).unwrap();
        assert_eq!(start.from_anchor, None);
    }

    #[test]
    fn a_bundle_rewritten_to_the_new_anchor_before_the_issuer_moved_restarts_the_rotation() {
        let (old, new_ca) = (root("root"), root("root"));
        let issuer = [issued("identity", &old, true).parsed()];
        let new_issuer = [issued("identity", &new_ca, true).parsed()];
        let (old, new) = (old.parsed(), new_ca.parsed());
        let only_new = Bundle::from_certs([new.clone()]);
        let start = decide_start(&new, &only_new, Some(&old), &issuer).unwrap();
        assert_eq!(start.from_anchor.as_deref(), Some(old.fingerprint()));
        assert!(
            start.trigger.contains("lost the previous anchor"),
            "{}",
            start.trigger
        );
        // Once the issuer moved to the new anchor, the old root is not needed: Synced.
        assert_eq!(decide_start(&new, &only_new, Some(&old), &new_issuer), None);
    }
}
