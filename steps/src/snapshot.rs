//! The operator's pod cache and the one way steps get the meshed pods: from the cache when
//! it can answer, else listed through [`crate::observe`]. Every other object a step reads
//! goes through [`crate::read`].

use crate::observe::{list_meshed_pods, MeshedPod, PodRef};
use crate::step::{StepContext, StepError};
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use trust_rotation_crds::TrustAnchorRotationSpec;

/// How many of the pods a stalled step waits for are re-read before it names them.
pub const CONFIRM_MAX: usize = 50;

/// A watch-fed cache of meshed pods (the operator keeps one, so that waiting steps do not
/// list every pod of the cluster each time they look).
pub trait PodSource: Send + Sync {
    /// Every meshed pod of the control plane in `linkerd_ns`, or `None` when the cache cannot
    /// answer (not synced yet, or not watching that control plane).
    fn meshed_pods(&self, linkerd_ns: &str) -> Option<Vec<MeshedPod>>;

    /// Drops a pod the API server says is gone (a deletion the watch never delivered).
    fn forget_pod(&self, _linkerd_ns: &str, _pod: &PodRef) {}
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

/// How long after the stall timeout (and after each further stall timeout) a stalled step
/// re-reads the pods it waits for. A stall can last hours (a person away, a natural renewal
/// that is slow): re-reading on every look (every 2 s) would send up to [`CONFIRM_MAX`] GETs
/// each time; within this window at the start of each period, a few looks do.
pub const CONFIRM_WINDOW: std::time::Duration = std::time::Duration::from_secs(10);

/// Whether the step `step` has waited past the stall timeout without progress (its next
/// message would be a stall, naming pods) and is within [`CONFIRM_WINDOW`] of the start of a
/// stall-timeout period: the moments to re-read the pods it waits for.
pub fn stalled(ctx: &StepContext, step: &str) -> bool {
    let timeout = ctx
        .spec
        .stall_timeout()
        .unwrap_or(std::time::Duration::from_secs(5 * 60));
    ctx.records
        .iter()
        .find(|r| r.name == step)
        .and_then(|r| r.last_progress_time.as_ref().or(r.started_at.as_ref()))
        .and_then(|since| std::time::Duration::try_from(since.0.duration_until(ctx.now)).ok())
        .is_some_and(|quiet| {
            quiet >= timeout
                && (quiet.as_millis() - timeout.as_millis()) % timeout.as_millis().max(1)
                    < CONFIRM_WINDOW.as_millis()
        })
}

/// Before a stalled step names the pods it waits for, it re-reads them (at most
/// [`CONFIRM_MAX`]): a pod the API server no longer has is forgotten by the cache and
/// returned, for the step to drop, so a deletion the watch missed cannot hold a rotation
/// nor have a person restart a workload twice.
pub async fn gone(ctx: &StepContext, waiting: &[PodRef]) -> Result<Vec<PodRef>, StepError> {
    let mut gone = Vec::new();
    for pod in waiting.iter().take(CONFIRM_MAX) {
        let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &pod.namespace);
        let live = api
            .get_opt(&pod.name)
            .await
            .map_err(|e| StepError::from_kube(format!("reading pod {pod}"), e))?;
        if live.is_none() {
            gone.push(pod.clone());
        }
    }
    if gone.is_empty() {
        return Ok(gone);
    }
    tracing::warn!(
        pods = ?gone.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "pods the view held are gone from the API server: dropped"
    );
    if let Some(source) = ctx.pods.as_deref() {
        for pod in &gone {
            source.forget_pod(&ctx.spec.control_plane.namespace, pod);
        }
    }
    Ok(gone)
}

/// [`gone`] for the pods `tally` waits for, when step `step` has stalled; nothing otherwise.
pub async fn gone_if_stalled<S>(
    ctx: &StepContext,
    step: &str,
    tally: &crate::convergence::Tally<S>,
) -> Result<Vec<PodRef>, StepError> {
    if tally.unconverged.is_empty() || !stalled(ctx, step) {
        return Ok(Vec::new());
    }
    let waiting: Vec<PodRef> = tally.unconverged.iter().map(|p| p.pod.clone()).collect();
    gone(ctx, &waiting).await
}
