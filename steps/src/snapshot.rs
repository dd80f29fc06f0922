//! The operator's pod cache and the one way steps get the meshed pods: from the cache when
//! it can answer, else listed through [`crate::observe`]. Every other object a step reads
//! goes through [`crate::read`].

use crate::observe::{list_meshed_pods, MeshedPod};
use crate::step::StepError;
use trust_rotation_crds::TrustAnchorRotationSpec;

/// A watch-fed cache of meshed pods (the operator keeps one, so that waiting steps do not
/// list every pod of the cluster each time they look).
pub trait PodSource: Send + Sync {
    /// Every meshed pod of the control plane in `linkerd_ns`, or `None` when the cache cannot
    /// answer (not synced yet, or not watching that control plane).
    fn meshed_pods(&self, linkerd_ns: &str) -> Option<Vec<MeshedPod>>;
}

/// Every meshed pod: from `source` when it can answer, else listed (paged) through the shared
/// observation module.
pub async fn meshed_pods(
    client: &kube::Client,
    spec: &TrustAnchorRotationSpec,
    source: Option<&dyn PodSource>,
) -> Result<Vec<MeshedPod>, StepError> {
    if let Some(pods) = source.and_then(|s| s.meshed_pods(&spec.control_plane.namespace)) {
        return Ok(pods);
    }
    Ok(list_meshed_pods(client, &spec.control_plane.namespace).await?)
}
