//! Where the runner keeps a rotation's status and publishes its Events: the Kubernetes side
//! of the runner, behind two small traits so that the runner's tests use fakes.

use super::transition::{EventKind, EventRecord};
use super::FIELD_MANAGER;
use crate::step::StepError;
use async_trait::async_trait;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder, Reporter};
use kube::Resource;
use tracing::{debug, warn, Instrument};
use trust_rotation_crds::{TrustAnchorRotation, TrustAnchorRotationStatus};

// === stores and sinks ===

/// Where the runner reads the rotation and writes its status.
#[async_trait]
pub trait StatusStore: Send + Sync {
    /// The rotation as it is now (`None` when it was deleted).
    async fn get(&self) -> Result<Option<TrustAnchorRotation>, StepError>;
    /// Replaces everything the operator owns in `.status` of `read` (the object the status
    /// was computed from: a deleted and re-created rotation must not inherit its status).
    /// Returns the object as written, whose `resourceVersion` the next write builds on.
    async fn apply(
        &self,
        read: &TrustAnchorRotation,
        status: &TrustAnchorRotationStatus,
    ) -> Result<TrustAnchorRotation, StepError>;
}

/// The real store: one named TrustAnchorRotation, status written by server-side apply.
pub struct KubeStatusStore {
    api: Api<TrustAnchorRotation>,
    name: String,
}

impl KubeStatusStore {
    pub fn new(client: kube::Client, name: impl Into<String>) -> Self {
        Self {
            api: Api::all(client),
            name: name.into(),
        }
    }
}

#[async_trait]
impl StatusStore for KubeStatusStore {
    async fn get(&self) -> Result<Option<TrustAnchorRotation>, StepError> {
        self.api.get_opt(&self.name).await.map_err(|e| {
            StepError::from_kube(format!("reading TrustAnchorRotation {}", self.name), e)
        })
    }

    async fn apply(
        &self,
        read: &TrustAnchorRotation,
        status: &TrustAnchorRotationStatus,
    ) -> Result<TrustAnchorRotation, StepError> {
        let uid = read.metadata.uid.as_deref();
        let what = || format!("writing the status of TrustAnchorRotation {}", self.name);
        // metadata.uid is a precondition: the API server refuses the patch when the object
        // was replaced by another of the same name. metadata.resourceVersion is one too (the
        // apply's merged object carries it, and the registry's update refuses a version other
        // than the stored one with 409 Conflict): a status computed from an object that
        // changed since (a spec edit, or another replica's write) is never written over it.
        let mut patch = serde_json::json!({
            "apiVersion": format!("{}/{}", trust_rotation_crds::GROUP, trust_rotation_crds::VERSION),
            "kind": "TrustAnchorRotation",
            "metadata": {"name": self.name},
            "status": status,
        });
        if let Some(uid) = uid {
            patch["metadata"]["uid"] = serde_json::Value::String(uid.to_string());
        }
        if let Some(rv) = read.metadata.resource_version.as_deref() {
            patch["metadata"]["resourceVersion"] = serde_json::Value::String(rv.to_string());
        }
        let applied = self
            .api
            .patch_status(
                &self.name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&patch),
            )
            .await
            .map_err(|e| status_write_error(what(), e))?;
        if uid.is_some() && applied.metadata.uid.as_deref() != uid {
            // A server that did not enforce the precondition: undo, so that the new object
            // starts from an empty status, and let the caller start over.
            let mut obj = applied;
            obj.status = None;
            let _ = self
                .api
                .replace_status(&self.name, &kube::api::PostParams::default(), &obj)
                .await;
            return Err(StepError::transient(
                crate::error::ErrorCategory::Replaced,
                format!(
                    "TrustAnchorRotation {} was deleted and re-created while being reconciled",
                    self.name
                ),
            ));
        }
        // Server-side apply removes a field this manager stops applying only when no other
        // manager owns it too (an older operator that used updates, a `kubectl edit`). Then
        // the status would keep a finished rotation: replace the status outright instead.
        let wanted = serde_json::to_value(status).unwrap_or_default();
        let got = serde_json::to_value(&applied.status).unwrap_or_default();
        if wanted != got {
            debug!("status fields co-owned by another manager survived the apply; replacing the status");
            let mut obj = applied;
            obj.status = Some(status.clone());
            return self
                .api
                .replace_status(&self.name, &kube::api::PostParams::default(), &obj)
                .await
                .map_err(|e| status_write_error(what(), e));
        }
        Ok(applied)
    }
}

/// A 409 on a status write means the object changed since it was read: a transient error of
/// its own category, so that the runner reads it again and recomputes before writing.
fn status_write_error(what: String, e: kube::Error) -> StepError {
    match &e {
        kube::Error::Api(s) if s.code == 409 => StepError::transient(
            crate::error::ErrorCategory::KubeConflict,
            format!(
                "{what}: the object changed since it was read ({}); reading it again",
                s.message
            ),
        ),
        _ => StepError::from_kube(what, e),
    }
}

/// The error category (label) of a status write refused because the object changed
/// meanwhile.
pub const CONFLICT: &str = crate::error::ErrorCategory::KubeConflict.label();

/// Where the runner publishes Kubernetes Events about the rotation.
#[async_trait]
pub trait EventSink: Send + Sync {
    async fn publish(&self, tar: &TrustAnchorRotation, event: &EventRecord);
}

/// Events through kube's [`Recorder`] (events.k8s.io/v1), regarding the TrustAnchorRotation.
///
/// Published in order by a background task, off the path of the writes that act: as
/// client-go's event broadcaster does, an Event never delays a step (two Events used to cost
/// two API round trips between a renewed anchor and the expanded bundle). At most
/// [`EVENT_QUEUE`] wait; more are dropped with a warning. Each keeps the span it was
/// published under, which ends once the API answered.
pub struct KubeEvents {
    queue: tokio::sync::mpsc::Sender<Queued>,
}

/// Events waiting to be published before more are dropped.
pub const EVENT_QUEUE: usize = 256;

struct Queued {
    regarding: k8s_openapi::api::core::v1::ObjectReference,
    event: KubeEvent,
    span: tracing::Span,
}

impl KubeEvents {
    /// Starts the publishing task (on the current Tokio runtime). `gate` is asked before each
    /// Event goes out: a replica that lost its Lease does not publish what it had queued.
    pub fn new(
        client: kube::Client,
        instance: Option<String>,
        gate: Option<super::WriteGate>,
    ) -> Self {
        let reporter = Reporter {
            controller: FIELD_MANAGER.into(),
            instance,
        };
        let recorder = Recorder::new(client, reporter);
        let (queue, mut rx) = tokio::sync::mpsc::channel::<Queued>(EVENT_QUEUE);
        tokio::spawn(async move {
            while let Some(q) = rx.recv().await {
                if gate.as_ref().is_some_and(|may_write| !may_write()) {
                    debug!(reason = %q.event.reason, "not leading any more: an Event is not published");
                    continue;
                }
                let reason = q.event.reason.clone();
                if let Err(e) = recorder
                    .publish(&q.event, &q.regarding)
                    .instrument(q.span)
                    .await
                {
                    // Events are best effort: a failure must not stop the rotation.
                    warn!(error = %e, reason, "could not publish an Event");
                }
            }
        });
        Self { queue }
    }
}

#[async_trait]
impl EventSink for KubeEvents {
    async fn publish(&self, tar: &TrustAnchorRotation, event: &EventRecord) {
        let EventRecord {
            kind,
            reason,
            action,
            note,
        } = event;
        let event = KubeEvent {
            type_: match kind {
                EventKind::Normal => EventType::Normal,
                EventKind::Warning => EventType::Warning,
            },
            reason: (*reason).into(),
            note: Some(truncate(note, 1000)),
            action: action.clone(),
            secondary: None,
        };
        let queued = Queued {
            regarding: tar.object_ref(&()),
            event,
            span: tracing::Span::current(),
        };
        if let Err(e) = self.queue.try_send(queued) {
            warn!(
                reason,
                "{EVENT_QUEUE} Events are waiting to be published: this one is dropped ({e})"
            );
        }
    }
}

pub(crate) fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}
