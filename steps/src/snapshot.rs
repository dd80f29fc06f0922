//! Thin reads of the objects a rotation looks at, turned into plain values that the steps'
//! pure decisions take. Every function here reads; nothing writes.

use crate::bundle::Bundle;
use crate::observe::{list_meshed_pods, meshed_pod_from, MeshedPod};
use crate::pki::{parse_pem_certificates, Certificate};
use crate::step::StepError;
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Event, Pod, Secret};
use kube::api::{Api, ListParams};
use std::collections::BTreeMap;
use trust_rotation_crds::{CertificateRef, ConfigMapRef, SecretRef, TrustAnchorRotationSpec};

/// The annotation `kubectl rollout restart` sets on a pod template.
pub const RESTARTED_AT_ANNOTATION: &str = "kubectl.kubernetes.io/restartedAt";
/// The pod-template annotation naming the rotation step that restarted a Deployment
/// (`<rotation id>/<step name>`), so that a resumed operator never restarts it twice.
pub const RESTARTED_FOR_ANNOTATION: &str = "trust.linkerd.io/restarted-for";

const TLS_CRT: &str = "tls.crt";

/// The Secret key of a certificate.
pub fn cert_key() -> &'static str {
    TLS_CRT
}

fn secret_text(secret: &Secret, key: &str) -> Option<String> {
    if let Some(v) = secret.data.as_ref().and_then(|d| d.get(key)) {
        return String::from_utf8(v.0.clone()).ok();
    }
    secret
        .string_data
        .as_ref()
        .and_then(|d| d.get(key))
        .cloned()
}

/// The certificates in `tls.crt` of a Secret, or `None` when the Secret does not exist.
pub async fn read_secret_certs(
    client: &kube::Client,
    namespace: &str,
    name: &str,
) -> Result<Option<Vec<Certificate>>, StepError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let Some(secret) = api
        .get_opt(name)
        .await
        .map_err(|e| StepError::from_kube(format!("reading Secret {namespace}/{name}"), e))?
    else {
        return Ok(None);
    };
    let Some(text) = secret_text(&secret, TLS_CRT) else {
        return Err(StepError::permanent(
            "invalid_secret",
            format!("Secret {namespace}/{name} has no {TLS_CRT} key: expected a PEM certificate written by cert-manager"),
        ));
    };
    parse_pem_certificates(&text).map(Some).map_err(|e| {
        StepError::permanent(
            "invalid_certificate",
            format!("Secret {namespace}/{name} key {TLS_CRT}: {e}"),
        )
    })
}

/// The trust anchor currently in the anchor Secret (the first certificate of `tls.crt`).
pub async fn read_anchor(
    client: &kube::Client,
    r: &CertificateRef,
) -> Result<Certificate, StepError> {
    match read_secret_certs(client, &r.namespace, &r.secret).await? {
        Some(mut certs) => Ok(certs.swap_remove(0)),
        None => Err(StepError::permanent(
            "missing_anchor",
            format!(
                "the trust-anchor Secret {}/{} does not exist: install the linkerd-cert-manager chart (Certificate {}/{} writes it) and check `kubectl -n {} get certificate {}`",
                r.namespace, r.secret, r.namespace, r.certificate, r.namespace, r.certificate
            ),
        )),
    }
}

/// The identity issuer's chain (`tls.crt`, issuer first).
pub async fn read_issuer(
    client: &kube::Client,
    r: &CertificateRef,
) -> Result<Vec<Certificate>, StepError> {
    read_secret_certs(client, &r.namespace, &r.secret).await?.ok_or_else(|| {
        StepError::permanent(
            "missing_issuer",
            format!(
                "the identity-issuer Secret {}/{} does not exist: check `kubectl -n {} get certificate {}`",
                r.namespace, r.secret, r.namespace, r.certificate
            ),
        )
    })
}

/// The certificate kept in the previous-anchor Secret, if any.
pub async fn read_previous_anchor(
    client: &kube::Client,
    r: &SecretRef,
) -> Result<Option<Certificate>, StepError> {
    Ok(read_secret_certs(client, &r.namespace, &r.name)
        .await?
        .map(|mut c| c.swap_remove(0)))
}

/// The trust-roots ConfigMap as the steps need it.
#[derive(Debug, Clone)]
pub struct BundleObservation {
    /// The exact value of the key (what the injector hashes).
    pub value: String,
    pub bundle: Bundle,
    /// Who else writes this ConfigMap, if a trust-manager Bundle owns it.
    pub trust_manager: bool,
}

/// Reads the trust-roots ConfigMap. `Ok(None)` when the ConfigMap or key is missing.
pub async fn read_bundle(
    client: &kube::Client,
    r: &ConfigMapRef,
) -> Result<Option<BundleObservation>, StepError> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), &r.namespace);
    let Some(cm) = api.get_opt(&r.name).await.map_err(|e| {
        StepError::from_kube(format!("reading ConfigMap {}/{}", r.namespace, r.name), e)
    })?
    else {
        return Ok(None);
    };
    let Some(value) = cm.data.as_ref().and_then(|d| d.get(&r.key)).cloned() else {
        return Ok(None);
    };
    let bundle = Bundle::parse(&value).map_err(|e| {
        StepError::permanent(
            "invalid_bundle",
            format!("ConfigMap {}/{} key {}: {e}; fix it or re-seed it with `linkerd trust bundle | kubectl apply -f -`", r.namespace, r.name, r.key),
        )
    })?;
    let trust_manager = cm
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.kind == "Bundle" && o.api_version.starts_with("trust.cert-manager.io"))
        || cm
            .metadata
            .managed_fields
            .iter()
            .flatten()
            .any(|m| m.manager.as_deref() == Some("trust-manager"));
    Ok(Some(BundleObservation {
        value,
        bundle,
        trust_manager,
    }))
}

/// What the user must do when the trust-roots ConfigMap is missing.
pub fn missing_bundle_message(r: &ConfigMapRef) -> String {
    format!(
        "ConfigMap {}/{} (key {}) does not exist: seed it from the trust anchor with `linkerd trust bundle | kubectl apply -f -`",
        r.namespace, r.name, r.key
    )
}

/// The rollout state of one Deployment.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeploymentView {
    pub name: String,
    /// `spec.template.metadata.annotations["kubectl.kubernetes.io/restartedAt"]`.
    pub restarted_at: Option<String>,
    /// `spec.template.metadata.annotations["trust.linkerd.io/restarted-for"]`.
    pub restarted_for: Option<String>,
    pub generation: i64,
    pub observed_generation: i64,
    pub desired: i32,
    pub replicas: i32,
    pub updated: i32,
    pub available: i32,
    /// Pods of the Deployment (not being deleted) whose proxy (or, without a proxy, whose pod)
    /// started before the given time: `namespace/name`.
    pub stale_pods: Vec<String>,
}

impl DeploymentView {
    /// `kubectl rollout status` done: the controller saw the latest spec, every replica runs the
    /// latest template, no old replica is left, and all are available.
    pub fn rollout_complete(&self) -> bool {
        self.observed_generation >= self.generation
            && self.updated >= self.desired
            && self.replicas == self.updated
            && self.available >= self.desired
    }

    /// Why the rollout is not complete, for the status.
    pub fn progress(&self) -> String {
        format!(
            "deployment/{}: {}/{} updated, {}/{} available, {} total replicas",
            self.name, self.updated, self.desired, self.available, self.desired, self.replicas
        )
    }
}

/// Reads a Deployment and judges its pods against `since` (pods whose proxy started earlier
/// are stale). `Ok(None)` when the Deployment does not exist.
pub async fn read_deployment(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    since: Timestamp,
) -> Result<Option<DeploymentView>, StepError> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let Some(d) = api
        .get_opt(name)
        .await
        .map_err(|e| StepError::from_kube(format!("reading Deployment {namespace}/{name}"), e))?
    else {
        return Ok(None);
    };
    let spec = Some(&d.spec);
    let status = d.status.as_ref();
    let selector: BTreeMap<String, String> = spec
        .and_then(|s| s.selector.match_labels.clone())
        .unwrap_or_default();
    let mut stale_pods = Vec::new();
    if !selector.is_empty() {
        let labels = selector
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",");
        let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
        let list = pods
            .list(&ListParams::default().labels(&labels))
            .await
            .map_err(|e| {
                StepError::from_kube(format!("listing pods of Deployment {namespace}/{name}"), e)
            })?;
        for p in &list.items {
            if p.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let started = match meshed_pod_from(p, namespace) {
                Some(m) if m.has_proxy => m.proxy_started_at,
                _ => p.metadata.creation_timestamp.as_ref().map(|t| t.0),
            };
            if started.is_none_or(|t| t < since) {
                stale_pods.push(format!(
                    "{namespace}/{}",
                    p.metadata.name.clone().unwrap_or_default()
                ));
            }
        }
    }
    Ok(Some(DeploymentView {
        name: name.to_string(),
        restarted_at: spec
            .and_then(|s| s.template.metadata.as_ref())
            .and_then(|m| m.annotations.as_ref())
            .and_then(|a| a.get(RESTARTED_AT_ANNOTATION))
            .cloned(),
        restarted_for: spec
            .and_then(|s| s.template.metadata.as_ref())
            .and_then(|m| m.annotations.as_ref())
            .and_then(|a| a.get(RESTARTED_FOR_ANNOTATION))
            .cloned(),
        generation: d.metadata.generation.unwrap_or(0),
        observed_generation: status.and_then(|s| s.observed_generation).unwrap_or(0),
        desired: spec.and_then(|s| s.replicas).unwrap_or(1),
        replicas: status.and_then(|s| s.replicas).unwrap_or(0),
        updated: status.and_then(|s| s.updated_replicas).unwrap_or(0),
        available: status.and_then(|s| s.available_replicas).unwrap_or(0),
        stale_pods,
    }))
}

/// An Event the identity controller recorded on its Deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityEvent {
    pub reason: String,
    pub message: String,
    pub at: Timestamp,
}

/// Events about `Deployment/<name>` in `namespace` (core/v1, as client-go's recorder writes
/// them), oldest first.
pub async fn read_deployment_events(
    client: &kube::Client,
    namespace: &str,
    name: &str,
) -> Result<Vec<IdentityEvent>, StepError> {
    let api: Api<Event> = Api::namespaced(client.clone(), namespace);
    let list = api
        .list(&ListParams::default())
        .await
        .map_err(|e| StepError::from_kube(format!("listing Events in {namespace}"), e))?;
    let mut out: Vec<IdentityEvent> = list
        .items
        .into_iter()
        .filter(|e| {
            e.involved_object.kind.as_deref() == Some("Deployment")
                && e.involved_object.name.as_deref() == Some(name)
        })
        .filter_map(|e| {
            let at = e
                .last_timestamp
                .as_ref()
                .map(|t| t.0)
                .or_else(|| e.event_time.as_ref().map(|t| t.0))
                .or_else(|| e.first_timestamp.as_ref().map(|t| t.0))
                .or_else(|| e.metadata.creation_timestamp.as_ref().map(|t| t.0))?;
            Some(IdentityEvent {
                reason: e.reason.unwrap_or_default(),
                message: e.message.unwrap_or_default(),
                at,
            })
        })
        .collect();
    out.sort_by_key(|e| e.at);
    Ok(out)
}

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
    list_meshed_pods(client, &spec.control_plane.namespace)
        .await
        .map_err(|e| {
            if e.is_transient() {
                StepError::transient(e.category(), e.to_string())
            } else {
                StepError::permanent(e.category(), e.to_string())
            }
        })
}
