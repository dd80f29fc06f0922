//! The one read layer: how the operator's steps and the `linkerd trust` CLI read what a
//! rotation looks at — the certificate Secrets (trust anchor, previous anchor, identity
//! issuer), the trust-roots ConfigMap, Deployments (with the one definition of "rolled out"),
//! the identity controller's Events and the TrustAnchorRotation — turned into plain values,
//! with typed errors: the object is missing ([`ReadError::Missing`]), it is there but
//! unusable ([`ReadError::Invalid`]), or the API server could not be asked
//! ([`ReadError::Api`]). Every function here reads; nothing writes.
//!
//! The conversions from API objects are pure functions (`*_from`), so that both callers and
//! the tests judge an object the same way whether it was read or built.

use crate::bundle::Bundle;
use crate::error::ErrorCategory;
use crate::observe::meshed_pod_from;
use crate::pki::{parse_pem_certificates, Certificate};
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Event, Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DynamicObject, ListParams};
use std::collections::BTreeMap;
use std::sync::Arc;
use trust_rotation_crds::{CertificateRef, ConfigMapRef, SecretRef, TrustAnchorRotation};

/// The Secret key of a certificate (and its chain) as cert-manager writes it.
pub const TLS_CRT: &str = "tls.crt";
/// The annotation `kubectl rollout restart` sets on a pod template.
pub const RESTARTED_AT_ANNOTATION: &str = "kubectl.kubernetes.io/restartedAt";
/// The pod-template annotation naming the rotation step that restarted a Deployment
/// (`<rotation id>/<step name>`), so that a resumed operator never restarts it twice.
pub const RESTARTED_FOR_ANNOTATION: &str = "trust.linkerd.io/restarted-for";
/// How a person (re)creates the trust-roots ConfigMap.
pub const SEED_BUNDLE_COMMAND: &str = "linkerd trust bundle | kubectl apply -f -";

/// Why a read failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ReadError {
    /// The object (or the key of it that holds what is needed) does not exist.
    #[error("{what} not found{}", with_fix(fix))]
    Missing { what: String, fix: String },
    /// The object exists but does not hold what it must (no certificate, not PEM...).
    #[error("{what}: {problem}{}", with_fix(fix))]
    Invalid {
        /// The object and key, e.g. `Secret cert-manager/linkerd-trust-anchor key tls.crt`.
        what: String,
        problem: String,
        fix: String,
        category: ErrorCategory,
    },
    /// The API server could not be reached, refused, or failed.
    #[error("{action}: {source}")]
    Api {
        /// What was being done, e.g. `reading Secret linkerd/linkerd-identity-issuer`.
        action: String,
        #[source]
        source: Arc<kube::Error>,
    },
}

fn with_fix(fix: &str) -> String {
    if fix.is_empty() {
        String::new()
    } else {
        format!(": {fix}")
    }
}

impl ReadError {
    /// An API failure while doing `action`.
    pub fn api(action: impl Into<String>, source: kube::Error) -> Self {
        ReadError::Api {
            action: action.into(),
            source: Arc::new(source),
        }
    }

    /// The category: `missing_resource`, `invalid_certificate` / `invalid_bundle`, or the
    /// Kubernetes error's (by [`ErrorCategory::of_kube`]).
    pub fn category(&self) -> ErrorCategory {
        match self {
            ReadError::Missing { .. } => ErrorCategory::MissingResource,
            ReadError::Invalid { category, .. } => *category,
            ReadError::Api { source, .. } => ErrorCategory::of_kube(source),
        }
    }

    /// Whether reading again later may succeed without anyone changing anything.
    pub fn is_transient(&self) -> bool {
        matches!(self, ReadError::Api { .. }) && self.category().is_transient()
    }

    pub fn is_missing(&self) -> bool {
        matches!(self, ReadError::Missing { .. })
    }

    /// The Kubernetes error of an API failure.
    pub fn kube_error(&self) -> Option<&kube::Error> {
        match self {
            ReadError::Api { source, .. } => Some(source.as_ref()),
            _ => None,
        }
    }

    /// Replaces what a person should do about a missing object (the caller knows best what
    /// the object is for).
    pub fn with_missing_fix(self, new_fix: impl Into<String>) -> Self {
        match self {
            ReadError::Missing { what, .. } => ReadError::Missing {
                what,
                fix: new_fix.into(),
            },
            other => other,
        }
    }

    /// Adds "or pass FLAG" to what a person should do about a missing object (for a CLI
    /// whose flag names it).
    pub fn or_pass(self, flag: &str) -> Self {
        match self {
            ReadError::Missing { what, fix } => {
                let fix = if fix.is_empty() {
                    format!("or pass {flag}")
                } else {
                    format!("{fix} (or pass {flag})")
                };
                ReadError::Missing { what, fix }
            }
            other => other,
        }
    }
}

/// Splits a missing object off a read: `Ok(Err(message))` when it is missing (a step blocks
/// with the message, which says what to do), `Ok(Ok(value))` when read, `Err` otherwise.
pub fn split_missing<T>(r: Result<T, ReadError>) -> Result<Result<T, String>, ReadError> {
    match r {
        Ok(v) => Ok(Ok(v)),
        Err(e) if e.is_missing() => Ok(Err(e.to_string())),
        Err(e) => Err(e),
    }
}

/// The text of `key` of a Secret: `data` as the API server returns it, else `stringData`
/// (write-only on a real API server, but present in manifests and objects built by hand).
/// `None` when neither holds the key; `Err` when `data` is not UTF-8.
fn secret_text(secret: &Secret, key: &str) -> Option<Result<String, ()>> {
    if let Some(v) = secret.data.as_ref().and_then(|d| d.get(key)) {
        return Some(String::from_utf8(v.0.clone()).map_err(|_| ()));
    }
    secret
        .string_data
        .as_ref()
        .and_then(|d| d.get(key))
        .cloned()
        .map(Ok)
}

fn secret_keys(secret: &Secret) -> Vec<String> {
    let mut keys: Vec<String> = secret
        .data
        .iter()
        .flat_map(|d| d.keys().cloned())
        .chain(secret.string_data.iter().flat_map(|d| d.keys().cloned()))
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

/// The certificates of a Secret's `tls.crt` (at least one, leaf or CA first as written).
/// `fix` says what a person should do when they are unusable.
pub fn certificates_from(secret: &Secret, fix: &str) -> Result<Vec<Certificate>, ReadError> {
    let ns = secret.metadata.namespace.as_deref().unwrap_or_default();
    let name = secret.metadata.name.as_deref().unwrap_or_default();
    let invalid = |problem: String| ReadError::Invalid {
        what: format!("Secret {ns}/{name} key {TLS_CRT}"),
        problem,
        fix: fix.to_string(),
        category: ErrorCategory::InvalidCertificate,
    };
    let text = match secret_text(secret, TLS_CRT) {
        None => {
            let keys = secret_keys(secret);
            return Err(invalid(if keys.is_empty() {
                "absent (the Secret holds no data)".to_string()
            } else {
                format!("absent (the Secret holds {})", keys.join(", "))
            }));
        }
        Some(Err(())) => return Err(invalid("not UTF-8 text, so not PEM".to_string())),
        Some(Ok(t)) => t,
    };
    parse_pem_certificates(&text).map_err(|e| invalid(e.to_string()))
}

/// Reads are idempotent: an API server's passing failure (a 5xx, a dropped connection, a
/// timeout) is retried twice, briefly, before it becomes a step error with the runner's
/// backoff. Every step reads several objects to check the bundle invariant; without this, one
/// flaky API server multiplies into long backoffs. (kube's client already retries 429s and
/// 503s with their Retry-After.)
pub(crate) async fn retrying<T, F, Fut>(mut read: F) -> Result<T, kube::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, kube::Error>>,
{
    const PAUSES: [std::time::Duration; 2] = [
        std::time::Duration::from_millis(100),
        std::time::Duration::from_millis(400),
    ];
    let mut pauses = PAUSES.iter();
    loop {
        match read().await {
            Err(e)
                if matches!(
                    ErrorCategory::of_kube(&e),
                    ErrorCategory::KubeServer
                        | ErrorCategory::KubeConnection
                        | ErrorCategory::Timeout
                ) =>
            {
                match pauses.next() {
                    Some(p) => tokio::time::sleep(*p).await,
                    None => return Err(e),
                }
            }
            other => return other,
        }
    }
}

async fn get_secret(
    client: &kube::Client,
    namespace: &str,
    name: &str,
) -> Result<Option<Secret>, ReadError> {
    let api = Api::<Secret>::namespaced(client.clone(), namespace);
    retrying(|| api.get_opt(name))
        .await
        .map_err(|e| ReadError::api(format!("reading Secret {namespace}/{name}"), e))
}

fn certificate_fix(r: &CertificateRef) -> String {
    format!(
        "cert-manager writes it for Certificate {ns}/{cert}; see `kubectl -n {ns} describe certificate {cert}`",
        ns = r.namespace,
        cert = r.certificate
    )
}

/// The certificate chain a cert-manager Certificate wrote into its Secret.
async fn certificate_secret(
    client: &kube::Client,
    r: &CertificateRef,
    what_for: &str,
) -> Result<Vec<Certificate>, ReadError> {
    let fix = certificate_fix(r);
    match get_secret(client, &r.namespace, &r.secret).await? {
        Some(secret) => certificates_from(&secret, &format!("it must hold {what_for}; {fix}")),
        None => Err(ReadError::Missing {
            what: format!("Secret {}/{}", r.namespace, r.secret),
            fix: format!("install the linkerd-cert-manager chart; {fix}"),
        }),
    }
}

/// Every certificate of the anchor Secret's `tls.crt` (never empty).
pub async fn anchor_certificates(
    client: &kube::Client,
    r: &CertificateRef,
) -> Result<Vec<Certificate>, ReadError> {
    certificate_secret(client, r, "the PEM trust anchor").await
}

/// The trust anchor: the first certificate of the anchor Secret's `tls.crt`.
pub async fn anchor(client: &kube::Client, r: &CertificateRef) -> Result<Certificate, ReadError> {
    Ok(anchor_certificates(client, r).await?.swap_remove(0))
}

/// The identity issuer's chain (`tls.crt`: the issuer first, never empty).
pub async fn issuer_chain(
    client: &kube::Client,
    r: &CertificateRef,
) -> Result<Vec<Certificate>, ReadError> {
    certificate_secret(client, r, "the PEM identity issuer certificate").await
}

/// The anchor kept in the previous-anchor Secret, `None` when the Secret does not exist or
/// holds no certificate yet: the chart creates it empty (so that the operator needs no right
/// to create Secrets), and an empty or absent `tls.crt` means no previous anchor.
pub async fn previous_anchor(
    client: &kube::Client,
    r: &SecretRef,
) -> Result<Option<Certificate>, ReadError> {
    let Some(secret) = get_secret(client, &r.namespace, &r.name).await? else {
        return Ok(None);
    };
    let empty = match secret_text(&secret, TLS_CRT) {
        None => true,
        Some(Ok(text)) => text.trim().is_empty(),
        Some(Err(())) => false,
    };
    if empty {
        return Ok(None);
    }
    let fix = "it holds the previous trust anchor the operator keeps during a rotation: \
               restore that certificate (PEM), or delete the Secret outside a rotation";
    Ok(Some(certificates_from(&secret, fix)?.swap_remove(0)))
}

/// The trust-roots ConfigMap as the steps and the CLI need it.
#[derive(Debug, Clone)]
pub struct TrustBundle {
    /// The exact value of the key (what the injector hashes).
    pub value: String,
    pub bundle: Bundle,
    /// The controller that owns this ConfigMap besides the operator, if any (see
    /// [`bundle_owner`]).
    pub owner: Option<BundleOwner>,
    /// Who last changed the trust-roots key, from `managedFields` (see [`bundle_writer`]).
    pub last_writer: Option<BundleWriter>,
}

/// The field manager that owns the trust-roots key of the ConfigMap: on a real API server the
/// last one to change it (an update takes ownership of the fields it changes; an apply owns
/// what it applies).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleWriter {
    /// The field manager, as the API server recorded it (`kubectl-client-side-apply`,
    /// `helm`, `argocd-controller`, `kustomize-controller`, `trust-manager`...).
    pub manager: String,
    /// `Apply` or `Update`.
    pub operation: Option<String>,
    /// When that manager last changed the object.
    pub time: Option<Timestamp>,
}

impl BundleWriter {
    /// The writer for a person: the tool behind well-known field managers, and the manager.
    pub fn describe(&self) -> String {
        let m = self.manager.as_str();
        let tool = match m {
            _ if m.starts_with("kubectl") => Some("kubectl"),
            "helm" | "Helm" => Some("Helm"),
            _ if m.starts_with("argocd") => Some("Argo CD"),
            "kustomize-controller" | "helm-controller" | "flux" => Some("Flux"),
            "trust-manager" => Some("trust-manager"),
            _ => None,
        };
        let at = self
            .time
            .map(|t| format!(" at {}", t.strftime("%Y-%m-%dT%H:%M:%SZ")))
            .unwrap_or_default();
        match tool {
            Some(tool) => format!("{tool} (field manager {m}{at})"),
            None => format!("field manager {m}{at}"),
        }
    }
}

/// Who owns `data.<key>` in `meta.managedFields`, the operator (`ours`) aside: the latest
/// entry (by time) whose fields include that key. `None` when only the operator does, or the
/// server recorded no field management.
pub fn bundle_writer(meta: &ObjectMeta, key: &str, ours: &str) -> Option<BundleWriter> {
    meta.managed_fields
        .iter()
        .flatten()
        .filter(|m| m.manager.as_deref().is_some_and(|name| name != ours))
        .filter(|m| {
            m.fields_v1
                .as_ref()
                .and_then(|f| {
                    f.0.pointer(&format!(
                        "/f:data/f:{}",
                        key.replace('~', "~0").replace('/', "~1")
                    ))
                })
                .is_some()
        })
        .map(|m| BundleWriter {
            manager: m.manager.clone().unwrap_or_default(),
            operation: m.operation.clone(),
            time: m.time.as_ref().map(|t| t.0),
        })
        .max_by_key(|w| w.time)
}

fn missing_bundle(what: String) -> ReadError {
    ReadError::Missing {
        what,
        fix: format!("seed it from the trust anchor with `{SEED_BUNDLE_COMMAND}`"),
    }
}

/// The exact value of the trust-roots key of a ConfigMap; `Missing` without the key.
fn bundle_value_from(cm: &ConfigMap, r: &ConfigMapRef) -> Result<String, ReadError> {
    cm.data
        .as_ref()
        .and_then(|d| d.get(&r.key))
        .cloned()
        .ok_or_else(|| {
            missing_bundle(format!(
                "ConfigMap {}/{} key {}",
                r.namespace, r.name, r.key
            ))
        })
}

/// Judges a trust-roots ConfigMap read or built elsewhere.
pub fn trust_bundle_from(cm: &ConfigMap, r: &ConfigMapRef) -> Result<TrustBundle, ReadError> {
    let value = bundle_value_from(cm, r)?;
    let bundle = Bundle::parse(&value).map_err(|e| ReadError::Invalid {
        what: format!("ConfigMap {}/{} key {}", r.namespace, r.name, r.key),
        problem: e.to_string(),
        fix: format!("fix it, or re-seed it with `{SEED_BUNDLE_COMMAND}` outside a rotation"),
        category: ErrorCategory::InvalidBundle,
    })?;
    Ok(TrustBundle {
        value,
        bundle,
        owner: bundle_owner(&r.name, Some(&cm.metadata), &[]),
        last_writer: bundle_writer(&cm.metadata, &r.key, crate::runner::FIELD_MANAGER),
    })
}

async fn get_bundle_configmap(
    client: &kube::Client,
    r: &ConfigMapRef,
) -> Result<ConfigMap, ReadError> {
    let api = Api::<ConfigMap>::namespaced(client.clone(), &r.namespace);
    retrying(|| api.get_opt(&r.name))
        .await
        .map_err(|e| ReadError::api(format!("reading ConfigMap {}/{}", r.namespace, r.name), e))?
        .ok_or_else(|| missing_bundle(format!("ConfigMap {}/{}", r.namespace, r.name)))
}

/// Reads the trust-roots ConfigMap: `Missing` when the ConfigMap or its key is absent,
/// `Invalid` when the value is not a PEM bundle.
pub async fn trust_bundle(
    client: &kube::Client,
    r: &ConfigMapRef,
) -> Result<TrustBundle, ReadError> {
    trust_bundle_from(&get_bundle_configmap(client, r).await?, r)
}

/// The exact value of the trust-roots key, parsed or not (what pods' bundles are compared
/// with); `Missing` when the ConfigMap or its key is absent.
pub async fn trust_bundle_value(
    client: &kube::Client,
    r: &ConfigMapRef,
) -> Result<String, ReadError> {
    bundle_value_from(&get_bundle_configmap(client, r).await?, r)
}

/// The one predicate for "trust-manager writes the ConfigMap named `name`", with the
/// evidence for messages. trust-manager names the ConfigMaps it writes after their Bundle,
/// makes the Bundle their controller (an owner reference to a `trust.cert-manager.io`
/// Bundle) and applies them as the field manager `trust-manager`. The evidence is the
/// ConfigMap's own metadata, when the caller read it, and the trust-manager Bundles the caller
/// could list (a Bundle named `name` with a ConfigMap target writes it, even before
/// trust-manager has run). The operator passes the ConfigMap only (it has no RBAC for
/// Bundles); `linkerd trust check` passes both.
pub fn trust_manager_writer(
    name: &str,
    configmap: Option<&ObjectMeta>,
    bundles: &[DynamicObject],
) -> Option<String> {
    if let Some(meta) = configmap {
        if let Some(owner) = meta
            .owner_references
            .iter()
            .flatten()
            .find(|o| o.kind == "Bundle" && o.api_version.starts_with("trust.cert-manager.io/"))
        {
            return Some(format!("trust-manager Bundle {}", owner.name));
        }
        if meta
            .managed_fields
            .iter()
            .flatten()
            .any(|m| m.manager.as_deref() == Some("trust-manager"))
        {
            return Some("trust-manager (field manager)".to_string());
        }
    }
    bundles
        .iter()
        .find(|b| {
            b.metadata.name.as_deref() == Some(name)
                && b.data.pointer("/spec/target/configMap").is_some()
        })
        .map(|b| {
            format!(
                "trust-manager Bundle {}",
                b.metadata.name.as_deref().unwrap_or(name)
            )
        })
}

/// A controller other than the operator that owns the trust-roots ConfigMap and would put its
/// own copy of the bundle back over the operator's writes, and how to hand the ConfigMap over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleOwner {
    /// e.g. `trust-manager Bundle linkerd-identity-trust-roots`, `Argo CD Application linkerd`.
    pub who: String,
    /// What to do so that it stops writing the ConfigMap.
    pub fix: String,
}

impl BundleOwner {
    /// What the operator blocks with (a rotation does not start, a bundle step writes
    /// nothing) while the ConfigMap `r` has this owner.
    pub fn blocking_message(&self, r: &ConfigMapRef) -> String {
        format!(
            "ConfigMap {}/{} is managed by {}, which would put its own copy of the bundle back over \
             the operator's writes (and drop a root the mesh still needs): {}; the rotation proceeds \
             once the ConfigMap is the operator's alone",
            r.namespace, r.name, self.who, self.fix
        )
    }
}

/// The one predicate for "someone else owns the trust-roots ConfigMap": trust-manager (see
/// [`trust_manager_writer`]), a Flux Kustomization or HelmRelease, an Argo CD Application or a
/// Helm release, each recognised by the labels, annotations or field managers it leaves on the
/// objects it applies. Evidence is the ConfigMap's metadata and, for trust-manager, the
/// Bundles the caller could list.
pub fn bundle_owner(
    name: &str,
    configmap: Option<&ObjectMeta>,
    bundles: &[DynamicObject],
) -> Option<BundleOwner> {
    if let Some(who) = trust_manager_writer(name, configmap, bundles) {
        return Some(BundleOwner {
            who,
            fix: "delete the trust-manager Bundle that targets it (the operator manages the trust roots)"
                .to_string(),
        });
    }
    gitops_owner(configmap?)
}

fn gitops_owner(meta: &ObjectMeta) -> Option<BundleOwner> {
    let label = |k: &str| {
        meta.labels
            .as_ref()
            .and_then(|l| l.get(k))
            .map(String::as_str)
    };
    let annotation = |k: &str| {
        meta.annotations
            .as_ref()
            .and_then(|a| a.get(k))
            .map(String::as_str)
    };
    let manager = |m: &str| {
        meta.managed_fields
            .iter()
            .flatten()
            .any(|f| f.manager.as_deref() == Some(m))
    };
    let qualified = |ns: Option<&str>, name: &str| match ns {
        Some(ns) => format!("{ns}/{name}"),
        None => name.to_string(),
    };
    // Flux: kustomize-controller stops reconciling an object annotated so.
    let flux_disabled = annotation("kustomize.toolkit.fluxcd.io/reconcile") == Some("disabled");
    if let Some(ks) = label("kustomize.toolkit.fluxcd.io/name").filter(|_| !flux_disabled) {
        return Some(BundleOwner {
            who: format!(
                "Flux Kustomization {}",
                qualified(label("kustomize.toolkit.fluxcd.io/namespace"), ks)
            ),
            fix: "remove the ConfigMap from that Kustomization's sources, or annotate it \
                  `kustomize.toolkit.fluxcd.io/reconcile: disabled` in the source, so that Flux \
                  stops reverting the operator's writes"
                .to_string(),
        });
    }
    if let Some(hr) = label("helm.toolkit.fluxcd.io/name") {
        return Some(BundleOwner {
            who: format!(
                "Flux HelmRelease {}",
                qualified(label("helm.toolkit.fluxcd.io/namespace"), hr)
            ),
            fix: "render the chart without the ConfigMap (Linkerd: identity.externalCA=true), after \
                  annotating it `helm.sh/resource-policy: keep` so that the upgrade does not delete it"
                .to_string(),
        });
    }
    let argo_app = annotation("argocd.argoproj.io/tracking-id")
        .map(|t| t.split(':').next().unwrap_or(t))
        .or_else(|| label("argocd.argoproj.io/instance"))
        .or_else(|| manager("argocd-controller").then_some("(unknown)"));
    if let Some(app) = argo_app {
        return Some(BundleOwner {
            who: format!("Argo CD Application {app}"),
            fix: "remove the ConfigMap from the Application's sources, or ignore its data \
                  (ignoreDifferences on /data with the RespectIgnoreDifferences=true sync option), so \
                  that Argo CD stops reverting the operator's writes"
                .to_string(),
        });
    }
    if label("app.kubernetes.io/managed-by") == Some("Helm") {
        if let Some(release) = annotation("meta.helm.sh/release-name") {
            return Some(BundleOwner {
                who: format!(
                    "Helm release {}",
                    qualified(annotation("meta.helm.sh/release-namespace"), release)
                ),
                fix: "upgrade the release without the ConfigMap (Linkerd: identity.externalCA=true), \
                      after annotating it `helm.sh/resource-policy: keep` so that the upgrade does not \
                      delete it"
                    .to_string(),
            });
        }
    }
    None
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
    /// started before the time asked for, as `namespace/name` (only filled by
    /// [`deployment_since`]).
    pub stale_pods: Vec<String>,
    /// The Deployment's meshed pods that are not being deleted (only filled by
    /// [`deployment_since`]).
    pub live_pods: Vec<crate::observe::MeshedPod>,
}

impl DeploymentView {
    /// Judges a Deployment object (without its pods).
    pub fn from_deployment(d: &Deployment) -> Self {
        let spec = Some(&d.spec);
        let status = d.status.as_ref();
        let annotation = |key: &str| {
            spec.and_then(|s| s.template.metadata.as_ref())
                .and_then(|m| m.annotations.as_ref())
                .and_then(|a| a.get(key))
                .cloned()
        };
        Self {
            name: d.metadata.name.clone().unwrap_or_default(),
            restarted_at: annotation(RESTARTED_AT_ANNOTATION),
            restarted_for: annotation(RESTARTED_FOR_ANNOTATION),
            generation: d.metadata.generation.unwrap_or(0),
            observed_generation: status.and_then(|s| s.observed_generation).unwrap_or(0),
            desired: spec.and_then(|s| s.replicas).unwrap_or(1),
            replicas: status.and_then(|s| s.replicas).unwrap_or(0),
            updated: status.and_then(|s| s.updated_replicas).unwrap_or(0),
            available: status.and_then(|s| s.available_replicas).unwrap_or(0),
            stale_pods: Vec::new(),
            live_pods: Vec::new(),
        }
    }

    /// The one definition of a Deployment that is rolled out and ready, as `kubectl rollout
    /// status` judges it: the controller saw the latest spec, every replica runs the latest
    /// template, no old replica is left, and all are available. Both the operator (waiting
    /// for the control plane) and `linkerd trust check` (cert-manager, the operator) use it.
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

async fn get_deployment(
    client: &kube::Client,
    namespace: &str,
    name: &str,
) -> Result<Deployment, ReadError> {
    let api = Api::<Deployment>::namespaced(client.clone(), namespace);
    retrying(|| api.get_opt(name))
        .await
        .map_err(|e| ReadError::api(format!("reading Deployment {namespace}/{name}"), e))?
        .ok_or_else(|| ReadError::Missing {
            what: format!("Deployment {namespace}/{name}"),
            fix: String::new(),
        })
}

/// Reads one Deployment; `Missing` (without a fix: the caller knows what the Deployment is
/// for, see [`ReadError::with_missing_fix`]) when it does not exist.
pub async fn deployment(
    client: &kube::Client,
    namespace: &str,
    name: &str,
) -> Result<DeploymentView, ReadError> {
    Ok(DeploymentView::from_deployment(
        &get_deployment(client, namespace, name).await?,
    ))
}

/// Every Deployment in `namespace`, by name.
pub async fn deployments(
    client: &kube::Client,
    namespace: &str,
) -> Result<Vec<DeploymentView>, ReadError> {
    let list = Api::<Deployment>::namespaced(client.clone(), namespace)
        .list(&ListParams::default())
        .await
        .map_err(|e| ReadError::api(format!("listing Deployments in {namespace}"), e))?;
    let mut out: Vec<DeploymentView> = list
        .items
        .iter()
        .map(DeploymentView::from_deployment)
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Reads a Deployment and judges its pods against `since`: pods whose proxy (or, without a
/// proxy, the pod) started earlier are stale.
pub async fn deployment_since(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    since: Timestamp,
) -> Result<DeploymentView, ReadError> {
    let d = get_deployment(client, namespace, name).await?;
    let mut view = DeploymentView::from_deployment(&d);
    let selector: BTreeMap<String, String> =
        d.spec.selector.match_labels.clone().unwrap_or_default();
    if selector.is_empty() {
        return Ok(view);
    }
    let labels = selector
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    let list = Api::<Pod>::namespaced(client.clone(), namespace)
        .list(&ListParams::default().labels(&labels))
        .await
        .map_err(|e| ReadError::api(format!("listing pods of Deployment {namespace}/{name}"), e))?;
    view.stale_pods = stale_pods(&list.items, namespace, since);
    view.live_pods = list
        .items
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter_map(|p| meshed_pod_from(p, namespace))
        .collect();
    Ok(view)
}

/// Pods (not being deleted) whose proxy, or without a proxy the pod, started before `since`.
pub fn stale_pods(pods: &[Pod], namespace: &str, since: Timestamp) -> Vec<String> {
    pods.iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| {
            let started = match meshed_pod_from(p, namespace) {
                Some(m) if m.has_proxy => m.proxy_started_at,
                _ => p.metadata.creation_timestamp.as_ref().map(|t| t.0),
            };
            started.is_none_or(|t| t < since)
        })
        .map(|p| {
            format!(
                "{namespace}/{}",
                p.metadata.name.clone().unwrap_or_default()
            )
        })
        .collect()
}

/// An Event the identity controller recorded on its Deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityEvent {
    pub reason: String,
    pub message: String,
    pub at: Timestamp,
}

/// The Events about `Deployment/<deployment>` among `events`, oldest first. The time of an
/// Event is its last occurrence (`lastTimestamp`, else `eventTime`, `firstTimestamp`, its
/// creation).
pub fn identity_events_from(events: Vec<Event>, deployment: &str) -> Vec<IdentityEvent> {
    let mut out: Vec<IdentityEvent> = events
        .into_iter()
        .filter(|e| {
            e.involved_object.kind.as_deref() == Some("Deployment")
                && e.involved_object.name.as_deref() == Some(deployment)
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
    out
}

/// Events about `Deployment/<deployment>` in `namespace` (core/v1, as client-go's recorder
/// writes them), oldest first.
pub async fn identity_events(
    client: &kube::Client,
    namespace: &str,
    deployment: &str,
) -> Result<Vec<IdentityEvent>, ReadError> {
    let list = Api::<Event>::namespaced(client.clone(), namespace)
        .list(&ListParams::default())
        .await
        .map_err(|e| ReadError::api(format!("listing Events in {namespace}"), e))?;
    Ok(identity_events_from(list.items, deployment))
}

/// Reads the TrustAnchorRotation `name`.
pub async fn rotation(client: &kube::Client, name: &str) -> Result<TrustAnchorRotation, ReadError> {
    Api::<TrustAnchorRotation>::all(client.clone())
        .get_opt(name)
        .await
        .map_err(|e| ReadError::api(format!("reading TrustAnchorRotation {name}"), e))?
        .ok_or_else(|| ReadError::Missing {
            what: format!("TrustAnchorRotation {name}"),
            fix: "the trust-rotation-operator chart creates it: install (or reinstall) the chart"
                .to_string(),
        })
}

/// Whether the TrustAnchorRotation CRD is served (a list of the type answers 404 when it is
/// not).
pub async fn rotation_crd_installed(client: &kube::Client) -> Result<bool, ReadError> {
    match Api::<TrustAnchorRotation>::all(client.clone())
        .list_metadata(&ListParams::default().limit(1))
        .await
    {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(false),
        Err(e) => Err(ReadError::api("listing TrustAnchorRotations", e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api_error(code: u16) -> kube::Error {
        let mut s = kube::core::Status::failure("injected", "Reason");
        s.code = code;
        kube::Error::Api(s.boxed())
    }

    #[tokio::test]
    async fn passing_server_errors_are_retried_twice_and_others_not_at_all() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let calls = AtomicUsize::new(0);
        // Two 500s, then the object.
        let got = retrying(|| {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            async move {
                if n < 2 {
                    Err(api_error(500))
                } else {
                    Ok(n)
                }
            }
        })
        .await;
        assert_eq!(got.ok(), Some(2));
        // Always failing: three attempts, then the error.
        calls.store(0, Ordering::SeqCst);
        let got: Result<(), _> = retrying(|| {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Err(api_error(500)) }
        })
        .await;
        assert!(got.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        // A 403 needs a person: no retry.
        calls.store(0, Ordering::SeqCst);
        let got: Result<(), _> = retrying(|| {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Err(api_error(403)) }
        })
        .await;
        assert!(got.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
    use crate::pki::testing::root;
    use k8s_openapi::ByteString;
    use serde_json::json;

    fn secret(v: serde_json::Value) -> Secret {
        serde_json::from_value(v).expect("test Secret is valid")
    }

    fn anchor_pem() -> (String, Certificate) {
        let ca = root("root.linkerd.cluster.local");
        (ca.pem(), ca.parsed())
    }

    #[test]
    fn a_secret_is_read_from_data_or_string_data_the_same_way() {
        let (pem, cert) = anchor_pem();
        let with_data = Secret {
            metadata: ObjectMeta {
                name: Some("linkerd-trust-anchor".into()),
                namespace: Some("cert-manager".into()),
                ..Default::default()
            },
            data: Some(BTreeMap::from([(
                TLS_CRT.to_string(),
                ByteString(pem.clone().into_bytes()),
            )])),
            ..Default::default()
        };
        let with_string_data = secret(json!({
            "metadata": {"name": "linkerd-trust-anchor", "namespace": "cert-manager"},
            "stringData": {"tls.crt": pem},
        }));
        assert_eq!(
            certificates_from(&with_data, "fix").unwrap(),
            std::slice::from_ref(&cert)
        );
        assert_eq!(
            certificates_from(&with_string_data, "fix").unwrap(),
            std::slice::from_ref(&cert)
        );
        // Both present: `data` is what the API server stored.
        let mut both = with_data.clone();
        both.string_data = Some(BTreeMap::from([(
            TLS_CRT.to_string(),
            "garbage".to_string(),
        )]));
        assert_eq!(certificates_from(&both, "fix").unwrap(), [cert]);
    }

    #[test]
    fn a_missing_key_is_invalid_and_names_the_secret_key_and_what_is_there() {
        let s = secret(json!({
            "metadata": {"name": "linkerd-identity-issuer", "namespace": "linkerd"},
            "data": {"ca.crt": "", "tls.key": ""},
        }));
        let e = certificates_from(&s, "re-issue it").unwrap_err();
        assert!(matches!(e, ReadError::Invalid { .. }), "{e:?}");
        assert_eq!(e.category(), ErrorCategory::InvalidCertificate);
        assert!(!e.is_transient() && !e.is_missing());
        assert_eq!(
            e.to_string(),
            "Secret linkerd/linkerd-identity-issuer key tls.crt: absent (the Secret holds ca.crt, tls.key): re-issue it"
        );
    }

    #[test]
    fn malformed_pem_is_invalid_with_the_secret_key_and_the_problem() {
        let s = secret(json!({
            "metadata": {"name": "garbage", "namespace": "cert-manager"},
            "stringData": {"tls.crt": "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n"},
        }));
        let e = certificates_from(&s, "fix it").unwrap_err();
        assert_eq!(e.category(), ErrorCategory::InvalidCertificate);
        let m = e.to_string();
        assert!(
            m.starts_with("Secret cert-manager/garbage key tls.crt: PEM block"),
            "{m}"
        );
        assert!(m.ends_with(": fix it"), "{m}");

        let s = secret(json!({
            "metadata": {"name": "garbage", "namespace": "cert-manager"},
            "stringData": {"tls.crt": "hello"},
        }));
        let m = certificates_from(&s, "fix it").unwrap_err().to_string();
        assert!(
            m.starts_with("Secret cert-manager/garbage key tls.crt: unexpected text \"hello\""),
            "{m}"
        );

        let s = secret(json!({
            "metadata": {"name": "empty", "namespace": "cert-manager"},
            "data": {"tls.crt": ""},
        }));
        let m = certificates_from(&s, "fix it").unwrap_err().to_string();
        assert!(m.contains("no PEM certificate found"), "{m}");

        let mut s = secret(json!({"metadata": {"name": "bin", "namespace": "ns"}}));
        s.data = Some(BTreeMap::from([(
            TLS_CRT.to_string(),
            ByteString(vec![0xff, 0xfe]),
        )]));
        let m = certificates_from(&s, "fix it").unwrap_err().to_string();
        assert!(m.contains("Secret ns/bin key tls.crt: not UTF-8"), "{m}");
    }

    fn roots_ref() -> ConfigMapRef {
        ConfigMapRef {
            namespace: "linkerd".into(),
            name: "linkerd-identity-trust-roots".into(),
            key: "ca-bundle.crt".into(),
        }
    }

    #[test]
    fn the_trust_bundle_is_missing_invalid_or_parsed() {
        let r = roots_ref();
        let cm = |data: serde_json::Value| -> ConfigMap {
            serde_json::from_value(json!({
                "metadata": {"name": r.name, "namespace": r.namespace},
                "data": data,
            }))
            .unwrap()
        };
        let e = trust_bundle_from(&cm(json!({"other": "x"})), &r).unwrap_err();
        assert!(e.is_missing());
        assert_eq!(e.category(), ErrorCategory::MissingResource);
        assert_eq!(
            e.to_string(),
            "ConfigMap linkerd/linkerd-identity-trust-roots key ca-bundle.crt not found: seed it \
             from the trust anchor with `linkerd trust bundle | kubectl apply -f -`"
        );

        let (pem, cert) = anchor_pem();
        let e = trust_bundle_from(&cm(json!({"ca-bundle.crt": format!("{pem}junk\n")})), &r)
            .unwrap_err();
        assert_eq!(e.category(), ErrorCategory::InvalidBundle);
        assert!(
            e.to_string().starts_with(
                "ConfigMap linkerd/linkerd-identity-trust-roots key ca-bundle.crt: unexpected text \"junk\""
            ),
            "{e}"
        );

        let b = trust_bundle_from(&cm(json!({"ca-bundle.crt": pem.clone()})), &r).unwrap();
        assert_eq!(b.value, pem);
        assert!(b.bundle.contains(cert.fingerprint()));
        assert_eq!(b.owner, None);
    }

    #[test]
    fn the_last_writer_of_the_bundle_key_other_than_the_operator_is_named() {
        let entry = |manager: &str, time: &str, fields: serde_json::Value| {
            serde_json::from_value::<
                k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry,
            >(json!({
                "manager": manager, "operation": "Update", "time": time,
                "fieldsType": "FieldsV1", "fieldsV1": fields,
            }))
            .unwrap()
        };
        let key = json!({"f:data": {"f:ca-bundle.crt": {}}});
        let mut meta = ObjectMeta {
            managed_fields: Some(vec![
                entry(
                    "kubectl-client-side-apply",
                    "2026-01-01T00:00:00Z",
                    key.clone(),
                ),
                entry(
                    "trust-rotation-operator",
                    "2026-01-02T00:00:00Z",
                    key.clone(),
                ),
                entry(
                    "argocd-controller",
                    "2026-01-03T00:00:00Z",
                    json!({"f:metadata": {"f:labels": {}}}),
                ),
            ]),
            ..Default::default()
        };
        let w = bundle_writer(&meta, "ca-bundle.crt", "trust-rotation-operator").unwrap();
        assert_eq!(w.manager, "kubectl-client-side-apply");
        assert_eq!(
            w.describe(),
            "kubectl (field manager kubectl-client-side-apply at 2026-01-01T00:00:00Z)"
        );
        // Another key of the ConfigMap is not the bundle.
        assert_eq!(
            bundle_writer(&meta, "other.crt", "trust-rotation-operator"),
            None
        );
        // Only the operator: nobody else to name.
        meta.managed_fields.as_mut().unwrap().remove(0);
        assert_eq!(
            bundle_writer(&meta, "ca-bundle.crt", "trust-rotation-operator"),
            None
        );
    }

    #[test]
    fn trust_manager_is_recognised_by_owner_field_manager_or_bundle() {
        let r = roots_ref();
        let mut meta: ObjectMeta = serde_json::from_value(json!({
            "name": r.name, "namespace": r.namespace,
            "ownerReferences": [{"apiVersion": "trust.cert-manager.io/v1alpha1", "kind": "Bundle",
                                 "name": "linkerd-identity-trust-roots", "uid": "u", "controller": true}],
        }))
        .unwrap();
        assert_eq!(
            trust_manager_writer(&r.name, Some(&meta), &[]).as_deref(),
            Some("trust-manager Bundle linkerd-identity-trust-roots")
        );
        meta.owner_references = None;
        meta.managed_fields = Some(vec![serde_json::from_value(
            json!({"manager": "trust-manager", "operation": "Apply"}),
        )
        .unwrap()]);
        assert!(trust_manager_writer(&r.name, Some(&meta), &[]).is_some());
        meta.managed_fields = Some(vec![serde_json::from_value(
            json!({"manager": "kubectl-client-side-apply", "operation": "Update"}),
        )
        .unwrap()]);
        assert_eq!(trust_manager_writer(&r.name, Some(&meta), &[]), None);

        let bundle = |name: &str, target: serde_json::Value| -> DynamicObject {
            serde_json::from_value(json!({
                "apiVersion": "trust.cert-manager.io/v1alpha1", "kind": "Bundle",
                "metadata": {"name": name},
                "spec": {"sources": [], "target": target},
            }))
            .unwrap()
        };
        let writes = bundle(&r.name, json!({"configMap": {"key": "ca-bundle.crt"}}));
        let other_name = bundle("other", json!({"configMap": {"key": "ca-bundle.crt"}}));
        let secret_only = bundle(&r.name, json!({"secret": {"key": "ca-bundle.crt"}}));
        assert_eq!(
            trust_manager_writer(&r.name, None, &[other_name.clone(), writes]).as_deref(),
            Some("trust-manager Bundle linkerd-identity-trust-roots")
        );
        assert_eq!(
            trust_manager_writer(&r.name, Some(&meta), &[other_name, secret_only]),
            None
        );
    }

    #[test]
    fn gitops_and_helm_owners_are_recognised_by_what_they_leave_on_the_configmap() {
        let r = roots_ref();
        let owner = |m: serde_json::Value| {
            let mut meta: ObjectMeta = serde_json::from_value(m).unwrap();
            meta.name = Some(r.name.clone());
            bundle_owner(&r.name, Some(&meta), &[]).map(|o| o.who)
        };
        assert_eq!(
            owner(
                json!({"labels": {"kustomize.toolkit.fluxcd.io/name": "infra",
                                    "kustomize.toolkit.fluxcd.io/namespace": "flux-system"}})
            )
            .as_deref(),
            Some("Flux Kustomization flux-system/infra")
        );
        // Flux told to leave it alone.
        assert_eq!(
            owner(
                json!({"labels": {"kustomize.toolkit.fluxcd.io/name": "infra"},
                         "annotations": {"kustomize.toolkit.fluxcd.io/reconcile": "disabled"}})
            ),
            None
        );
        assert_eq!(
            owner(json!({"labels": {"helm.toolkit.fluxcd.io/name": "linkerd",
                                    "helm.toolkit.fluxcd.io/namespace": "linkerd",
                                    "app.kubernetes.io/managed-by": "Helm"},
                         "annotations": {"meta.helm.sh/release-name": "linkerd"}}))
            .as_deref(),
            Some("Flux HelmRelease linkerd/linkerd")
        );
        assert_eq!(
            owner(json!({"annotations": {"argocd.argoproj.io/tracking-id":
                "linkerd-cp:/ConfigMap:linkerd/linkerd-identity-trust-roots"}}))
            .as_deref(),
            Some("Argo CD Application linkerd-cp")
        );
        assert_eq!(
            owner(json!({"labels": {"app.kubernetes.io/managed-by": "Helm"},
                         "annotations": {"meta.helm.sh/release-name": "linkerd-control-plane",
                                         "meta.helm.sh/release-namespace": "linkerd"}}))
            .as_deref(),
            Some("Helm release linkerd/linkerd-control-plane")
        );
        // kubectl, or the label alone with no release: nobody owns it.
        assert_eq!(
            owner(json!({"labels": {"app.kubernetes.io/managed-by": "Helm"}})),
            None
        );
        assert_eq!(
            owner(
                json!({"managedFields": [{"manager": "kubectl-client-side-apply", "operation": "Update"}]})
            ),
            None
        );
    }

    fn deployment(v: serde_json::Value) -> Deployment {
        serde_json::from_value(v).expect("test Deployment is valid")
    }

    #[test]
    fn one_readiness_definition_for_every_deployment() {
        let base = json!({
            "metadata": {"name": "cert-manager", "generation": 3},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "x"}},
                     "template": {"metadata": {"annotations": {
                         "kubectl.kubernetes.io/restartedAt": "2026-01-02T03:04:05Z",
                         "trust.linkerd.io/restarted-for": "r1/RollControlPlane"}}}},
            "status": {"observedGeneration": 3, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2},
        });
        let v = DeploymentView::from_deployment(&deployment(base.clone()));
        assert!(v.rollout_complete(), "{v:?}");
        assert_eq!(v.restarted_for.as_deref(), Some("r1/RollControlPlane"));
        assert_eq!(v.restarted_at.as_deref(), Some("2026-01-02T03:04:05Z"));
        for (field, value) in [
            ("observedGeneration", 2), // the controller has not seen the latest spec
            ("updatedReplicas", 1),    // a replica runs the old template
            ("replicas", 3),           // an old replica is still there
            ("availableReplicas", 1),  // a replica is not available
        ] {
            let mut d = base.clone();
            d["status"][field] = json!(value);
            let v = DeploymentView::from_deployment(&deployment(d));
            assert!(!v.rollout_complete(), "{field}={value}: {v:?}");
        }
        // No status yet: not rolled out. Scaled to zero: nothing to wait for.
        let mut d = base.clone();
        d["status"] = json!(null);
        assert!(!DeploymentView::from_deployment(&deployment(d)).rollout_complete());
        let mut d = base;
        d["spec"]["replicas"] = json!(0);
        d["status"] = json!({"observedGeneration": 3});
        assert!(DeploymentView::from_deployment(&deployment(d)).rollout_complete());
    }

    #[test]
    fn identity_events_are_those_of_the_deployment_oldest_first() {
        let ev = |kind: &str, name: &str, reason: &str, at: &str| -> Event {
            serde_json::from_value(json!({
                "metadata": {"name": format!("{name}.{reason}"), "namespace": "linkerd"},
                "involvedObject": {"kind": kind, "name": name},
                "reason": reason, "message": "m", "lastTimestamp": at,
            }))
            .unwrap()
        };
        let got = identity_events_from(
            vec![
                ev(
                    "Deployment",
                    "linkerd-identity",
                    "IssuerUpdated",
                    "2026-01-02T03:00:02Z",
                ),
                ev("Pod", "linkerd-identity", "Pulled", "2026-01-02T03:00:00Z"),
                ev(
                    "Deployment",
                    "linkerd-destination",
                    "IssuerUpdated",
                    "2026-01-02T03:00:00Z",
                ),
                ev(
                    "Deployment",
                    "linkerd-identity",
                    "IssuerUpdateSkipped",
                    "2026-01-02T03:00:01Z",
                ),
            ],
            "linkerd-identity",
        );
        let reasons: Vec<&str> = got.iter().map(|e| e.reason.as_str()).collect();
        assert_eq!(reasons, ["IssuerUpdateSkipped", "IssuerUpdated"]);
    }

    #[test]
    fn errors_say_what_to_do_and_carry_their_category() {
        let e = ReadError::Missing {
            what: "Deployment linkerd/trust-rotation-operator".into(),
            fix: String::new(),
        };
        assert_eq!(
            e.to_string(),
            "Deployment linkerd/trust-rotation-operator not found"
        );
        let e = e
            .with_missing_fix("install the trust-rotation-operator chart")
            .or_pass("--operator-deployment");
        assert_eq!(
            e.to_string(),
            "Deployment linkerd/trust-rotation-operator not found: install the \
             trust-rotation-operator chart (or pass --operator-deployment)"
        );
        let mut s = kube::core::Status::failure("secrets is forbidden", "Forbidden");
        s.code = 403;
        let e = ReadError::api("reading Secret a/b", kube::Error::Api(s.boxed()));
        assert_eq!(e.category(), ErrorCategory::KubeForbidden);
        assert!(!e.is_transient());
        assert!(e.to_string().starts_with("reading Secret a/b: "), "{e}");
        let mut s = kube::core::Status::failure("etcd", "InternalError");
        s.code = 503;
        let e = ReadError::api("reading Secret a/b", kube::Error::Api(s.boxed()));
        assert_eq!(e.category(), ErrorCategory::KubeServer);
        assert!(e.is_transient());
        // Every kind of read error becomes a step error with the same category and text.
        let step: crate::step::StepError = e.clone().into();
        assert_eq!(step.category(), "kube_server");
        assert!(step.is_transient());
        assert_eq!(step.message(), e.to_string());
    }
}
