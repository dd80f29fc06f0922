//! The `TrustAnchorRotation` custom resource (`trust.linkerd.io/v1alpha1`).
//!
//! One cluster-scoped object, named `cluster` (the CRD admits no other name: one rotation
//! per mesh), describes every resource a Linkerd trust-anchor rotation touches and records,
//! in its `.status`, how far the rotation has got. The doc comments on the fields below become the CRD's descriptions,
//! which is what `kubectl explain trustanchorrotations.spec` shows.

#![forbid(unsafe_code)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::Duration;

pub mod defaults;

pub use defaults::*;

/// API group of the TrustAnchorRotation resource.
pub const GROUP: &str = "trust.linkerd.io";
/// API version of the TrustAnchorRotation resource.
pub const VERSION: &str = "v1alpha1";
/// The CRD's name, as `kubectl get crd` shows it.
pub const CRD_NAME: &str = "trustanchorrotations.trust.linkerd.io";
/// How many finished rotations `.status.history` keeps.
pub const HISTORY_LIMIT: usize = 5;

/// A DNS-1123 label (namespaces): what the API server accepts as a namespace name.
pub const DNS1123_LABEL_PATTERN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";
/// A DNS-1123 subdomain (Secrets, ConfigMaps, Certificates, Deployments, trust domains).
pub const DNS1123_SUBDOMAIN_PATTERN: &str =
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
/// A ConfigMap key.
pub const CONFIGMAP_KEY_PATTERN: &str = r"^[-._a-zA-Z0-9]+$";
/// The CEL rule on the CRD that admits one TrustAnchorRotation per cluster.
pub const NAME_RULE: &str = "self.metadata.name == 'cluster'";
/// The message the API server gives when [`NAME_RULE`] refuses an object.
pub const NAME_RULE_MESSAGE: &str = "a cluster has one TrustAnchorRotation, named 'cluster': two rotations of the same mesh would fight over its control plane; edit the existing one (kubectl edit trustanchorrotation cluster)";

/// The duration grammar of the Linkerd proxy (`^\s*(\d+)(ms|s|m|h|d)?\s*$`), without the
/// surrounding whitespace the proxy tolerates. A value outside it makes the proxy exit at
/// start-up, so the CRD refuses it.
pub const PROXY_DURATION_PATTERN: &str = r"^\d+(ms|s|m|h|d)?$";

/// Desired configuration of a Linkerd trust-anchor rotation.
///
/// Every field has the default that the Linkerd and cert-manager documentation use, so
/// `spec: {}` describes a cluster installed as the user guide describes.
// Every `printcolumn(...)` repeats `type_`, which clippy mistakes for a duplicated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "trust.linkerd.io",
    version = "v1alpha1",
    kind = "TrustAnchorRotation",
    plural = "trustanchorrotations",
    singular = "trustanchorrotation",
    shortname = "tar",
    category = "linkerd",
    status = "TrustAnchorRotationStatus",
    printcolumn(
        name = "Phase",
        type_ = "string",
        json_path = ".status.phase",
        description = "Current phase of the rotation"
    ),
    printcolumn(
        name = "Bundle",
        type_ = "string",
        json_path = ".status.trustBundle.summary",
        description = "Meshed pods carrying the current trust bundle (converged/target)"
    ),
    printcolumn(
        name = "Certificates",
        type_ = "string",
        json_path = ".status.workloadCertificates.summary",
        description = "Meshed pods whose live workload certificate chains to the active issuer (converged/target)"
    ),
    printcolumn(
        name = "Blocked",
        type_ = "string",
        json_path = ".status.blockingMessage",
        description = "Why the rotation cannot proceed, if it cannot"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    // One rotation per mesh (as a cluster-scoped singleton): the only name admitted is
    // `cluster`. Rules on `metadata.name` are allowed at the root of a CRD's schema.
    validation = kube::core::Rule::new("self.metadata.name == 'cluster'").message(NAME_RULE_MESSAGE)
)]
#[serde(rename_all = "camelCase")]
pub struct TrustAnchorRotationSpec {
    /// The cert-manager Certificate that produces the trust anchor (the root of the mesh).
    /// A new certificate in its Secret starts a rotation.
    #[serde(default = "CertificateRef::default_trust_anchor")]
    #[schemars(default = "CertificateRef::default_trust_anchor")]
    pub trust_anchor: CertificateRef,

    /// The Secret that keeps a copy of the previous trust anchor's certificate (`tls.crt`,
    /// never the private key) while both roots are trusted.
    #[serde(default = "SecretRef::default_previous_anchor")]
    #[schemars(default = "SecretRef::default_previous_anchor")]
    pub previous_anchor: SecretRef,

    /// The cert-manager Certificate of Linkerd's identity issuer (signed by the trust
    /// anchor through the `linkerd-identity-issuer` ClusterIssuer).
    #[serde(default = "CertificateRef::default_identity_issuer")]
    #[schemars(default = "CertificateRef::default_identity_issuer")]
    pub identity_issuer: CertificateRef,

    /// The ConfigMap from which Linkerd reads its trust roots.
    #[serde(default)]
    pub trust_roots: ConfigMapRef,

    /// The Linkerd control plane whose Deployments are restarted when the bundle changes.
    #[serde(default)]
    pub control_plane: ControlPlaneRef,

    /// How often proxies should renew their workload certificate while the rotation waits
    /// for them to move onto the new issuer (`LINKERD2_PROXY_IDENTITY_MAX_REFRESH`). Uses
    /// the proxy's own duration grammar: digits and one unit of ms, s, m, h or d
    /// (`5m`, `300s`); compound values such as `1h30m` are refused because the proxy would
    /// exit at start-up. At least 1s: a shorter interval makes every proxy ask identity for a
    /// certificate many times a second.
    #[serde(default = "default_refresh_interval")]
    #[schemars(
        default = "default_refresh_interval",
        length(max = 16),
        regex(pattern = r"^\d+(ms|s|m|h|d)?$")
    )]
    pub workload_certificate_refresh_interval: String,

    /// When true, the operator itself consumes the accelerated refresh interval: during
    /// propagation it sets `config.linkerd.io/proxy-additional-env` on every namespace with
    /// meshed pods (so pods restarted then renew their certificates quickly after the
    /// issuer rotates), and removes what it set once the rotation is done. Leave false when
    /// the data plane operator is installed.
    #[serde(default)]
    pub manage_proxy_refresh_env: bool,

    /// Linkerd's trust domain, used to derive each pod's identity when probing its proxy.
    #[serde(default = "default_trust_domain")]
    #[schemars(default = "default_trust_domain")]
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub trust_domain: String,

    /// When true, the operator makes no further writes for this rotation; it resumes from
    /// the same point when set back to false.
    #[serde(default)]
    pub paused: bool,

    /// How long a waiting step may see nothing move (no pod converging, no observed state
    /// changing) before the operator reports it as stalled in `blockingMessage`, naming what
    /// is stuck and the command that fixes it. It keeps trying either way. Digits and one
    /// unit of s, m, h or d; at least 30s.
    #[serde(default = "default_stall_timeout")]
    #[schemars(
        default = "default_stall_timeout",
        length(max = 16),
        regex(pattern = r"^\d+(s|m|h|d)$")
    )]
    pub stall_timeout: String,

    /// When true, reducing the bundle at the end of a rotation leaves the new anchor only,
    /// removing roots the operator did not put there (a multicluster peer's root, a root
    /// phased in by hand). By default those foreign roots survive every rotation: only the
    /// anchors this rotation replaced are removed.
    #[serde(default)]
    pub remove_unknown_roots: bool,

    /// What the operator does by itself instead of waiting for a person. Everything is off
    /// by default: the user guide's manual steps stay as they are.
    #[serde(default)]
    pub automation: Automation,
}

/// What the operator automates, and where it waits for a person's approval first.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Automation {
    /// `Manual` (default): a person re-issues the identity issuer when the rotation waits in
    /// WaitingForIdentityRotation (`cmctl renew` or `linkerd trust renew issuer`).
    /// `Automatic`: once every meshed pod carries the expanded trust bundle, the operator
    /// triggers the re-issuance itself, as `cmctl renew` does (condition `Issuing=True` on
    /// the issuer's Certificate), once per rotation, and records it in
    /// `status.rotation.issuerRenewal`.
    #[serde(default)]
    pub issuer_renewal: RenewalMode,

    /// Points where the rotation waits for `linkerd trust approve <step>`.
    #[serde(default)]
    pub approvals: Approvals,

    /// `Manual` (default): a person restarts the meshed workloads where the rotation waits for
    /// them (`kubectl rollout restart`, named in the waiting message). `Automatic`: the
    /// operator restarts the meshed Deployments, StatefulSets and DaemonSets whose pods hold
    /// the rotation itself, as `kubectl rollout restart` does (the pod-template annotation
    /// `kubectl.kubernetes.io/restartedAt`), `maxConcurrentWorkloads` at a time, waiting for
    /// each rollout to complete and its pods to converge before the next. Each workload's
    /// own rollout strategy bounds its pods' unavailability; a workload whose
    /// PodDisruptionBudget allows no disruption is skipped and named. Bare pods and Job pods
    /// are never deleted. Progress is recorded in `status.workloadRestarts`.
    #[serde(default)]
    pub workload_restarts: RenewalMode,

    /// Only workloads in namespaces matching this label selector are restarted by the
    /// operator (all namespaces when absent). The others are left to a person.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,

    /// Only workloads (Deployments, StatefulSets, DaemonSets) whose own labels match this
    /// selector are restarted by the operator (all when absent). The others are left to a
    /// person.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_selector: Option<LabelSelector>,

    /// How many workloads the operator restarts at once (default 1, at least 1).
    #[serde(default = "default_max_concurrent_workloads")]
    #[schemars(transform = positive_int32)]
    pub max_concurrent_workloads: u32,

    /// When the operator renews the trust anchor by itself (`renewAnchorBefore`), and when it
    /// may act disruptively (`maintenanceWindows`). Empty (the default): no scheduled
    /// renewal, and the operator may act at any time.
    ///
    /// Outside every maintenance window the operator takes no disruptive action: it does not
    /// renew the anchor on schedule, does not re-issue the identity issuer
    /// (`issuerRenewal: Automatic`), starts no new workload restart (`workloadRestarts:
    /// Automatic`; rollouts already started complete), does not restart the control plane after
    /// the issuer moved, and does not remove the old root from the trust bundle (ReduceBundle and
    /// the control-plane restart after it). The rotation parks at the next step boundary with a
    /// `blockingMessage` naming when the next window opens, and resumes by itself then.
    ///
    /// Adding a renewed anchor to the trust bundle, and restarting the control plane onto that
    /// expanded bundle, are never held back: cert-manager renews the anchor on its own schedule,
    /// outside any window, and until the old and new anchors are both in the bundle the control
    /// plane and newly injected pods trust the old anchor only. A routine re-issuance of the
    /// identity issuer from the new anchor during such a hold would break every pod injected
    /// with the old bundle. Once the old+new bundle has reached the control plane, the mesh can
    /// safely stay where it is for any length of time.
    #[serde(default, skip_serializing_if = "Schedule::is_empty")]
    pub schedule: Schedule,
}

/// The automation's schedule: a scheduled anchor renewal and maintenance windows (see
/// `Automation::schedule`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Schedule {
    /// Renew the trust anchor when it has less validity left than this, instead of waiting
    /// for cert-manager's `renewBefore`: the operator triggers the anchor Certificate's
    /// re-issuance as `cmctl renew` does (inside a maintenance window, while Synced and not
    /// paused), once per anchor, and the rotation follows. Digits and one unit of m, h or d
    /// (`720h`, `30d`); at least 1h. Set it longer than the anchor Certificate's own
    /// `renewBefore`, so that the operator, inside a window, always renews before
    /// cert-manager does outside one. A value at least as long as the anchor's whole
    /// lifetime would renew every new anchor at once: the operator then renews nothing and
    /// says so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 16), regex(pattern = r"^\d+(m|h|d)$"))]
    pub renew_anchor_before: Option<String>,

    /// When the operator may take disruptive actions. Empty (the default): at any time.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub maintenance_windows: Vec<MaintenanceWindow>,
}

impl Schedule {
    pub fn is_empty(&self) -> bool {
        self.renew_anchor_before.is_none() && self.maintenance_windows.is_empty()
    }
}

/// A weekly maintenance window: it opens at `start` local time on each of `weekdays` (in
/// `timeZone`, daylight saving time included) and stays open for `duration`, possibly past
/// midnight and into the next week.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MaintenanceWindow {
    /// The days the window opens on (at least one).
    #[schemars(length(min = 1, max = 7))]
    pub weekdays: Vec<Weekday>,
    /// Local time the window opens, `HH:MM` (24-hour clock). On a day when a daylight saving
    /// change skips that time, the window opens as much later as the clocks jumped (02:30
    /// becomes 03:30); when the change repeats it, at the first of the two.
    #[schemars(regex(pattern = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"))]
    pub start: String,
    /// How long the window stays open: digits and one unit of m, h or d (`4h`, `90m`); at
    /// most 7d.
    #[schemars(length(max = 16), regex(pattern = r"^\d+(m|h|d)$"))]
    pub duration: String,
    /// The IANA time zone of `start` (`Europe/Berlin`, `America/New_York`); default UTC.
    #[serde(default = "default_time_zone")]
    #[schemars(default = "default_time_zone", length(min = 1, max = 64))]
    pub time_zone: String,
}

fn default_time_zone() -> String {
    "UTC".into()
}

/// A day of the week.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum Weekday {
    Mon,
    Tue,
    Wed,
    Thu,
    Fri,
    Sat,
    Sun,
}

impl Weekday {
    pub const ALL: [Weekday; 7] = [
        Weekday::Mon,
        Weekday::Tue,
        Weekday::Wed,
        Weekday::Thu,
        Weekday::Fri,
        Weekday::Sat,
        Weekday::Sun,
    ];

    /// Days since Monday (Mon = 0 .. Sun = 6).
    pub fn from_monday(self) -> i8 {
        self as i8
    }
}

/// The operator's own scheduled renewal of the trust anchor (`status.scheduledRenewal`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScheduledRenewalRecord {
    /// Fingerprint of the trust anchor the schedule looked at.
    pub anchor: String,
    /// When the operator triggered its renewal (absent when it did not: see `reason`). A
    /// renewal is triggered at most once per anchor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub triggered_at: Option<Time>,
    /// Why it was renewed, or why it was not.
    pub reason: String,
}

fn default_max_concurrent_workloads() -> u32 {
    1
}

impl Default for Automation {
    fn default() -> Self {
        Self {
            issuer_renewal: RenewalMode::Manual,
            approvals: Approvals::default(),
            workload_restarts: RenewalMode::Manual,
            namespace_selector: None,
            workload_selector: None,
            max_concurrent_workloads: default_max_concurrent_workloads(),
            schedule: Schedule::default(),
        }
    }
}

/// A workload the operator restarted, or would have and did not (`status.workloadRestarts`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadRestartRecord {
    /// The rotation it belongs to.
    pub rotation_id: String,
    /// The step that restarted it (a workload is restarted at most once per step).
    pub step: String,
    /// `namespace/kind/name`, kind lower-case: `emojivoto/deployment/web`.
    pub workload: String,
    /// Where it stands.
    pub state: WorkloadRestartState,
    /// When the operator patched its pod template (or decided to skip it).
    pub at: Time,
    /// Why it was skipped or is failing (a PodDisruptionBudget, `linkerd trust skip`, a
    /// rollout past its progress deadline and its failing pods).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Where one workload restart stands.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum WorkloadRestartState {
    /// Holds the step; waits for its turn (`maxConcurrentWorkloads`, a PodDisruptionBudget
    /// that allows no disruption right now, or a stopped automation).
    Pending,
    /// Its pod template was patched; the rollout and its pods' convergence are awaited.
    Restarting,
    /// Rolled out, and its pods converged.
    Restarted,
    /// Not restarted by the operator (a PodDisruptionBudget allows no disruption, or a
    /// person skipped it): its pods still hold the rotation until a person replaces them.
    Skipped,
}

/// Who re-issues a certificate during a rotation.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum RenewalMode {
    /// A person does (the user guide's step).
    #[default]
    Manual,
    /// The operator does, when the rotation is ready for it.
    Automatic,
}

/// Where a rotation parks, with `blockingMessage: awaiting approval: ...`, until a person
/// approves with `linkerd trust approve <step>` (the annotation `trust.linkerd.io/approve`
/// naming the step and the rotation's id).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Approvals {
    /// Wait for approval `IssuerRenewal` once the trust bundle has propagated, before the
    /// identity issuer is re-issued (by the operator with `issuerRenewal: Automatic`).
    #[serde(default)]
    pub before_issuer_renewal: bool,
    /// Wait for approval `RootRemoval` before the old trust anchor is removed from the
    /// trust bundle (ReduceBundle).
    #[serde(default)]
    pub before_root_removal: bool,
}

/// A step of a rotation a person may have to approve.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ApprovalGate {
    /// Re-issuing the identity issuer from the new trust anchor.
    IssuerRenewal,
    /// Removing the old trust anchor from the trust bundle.
    RootRemoval,
}

impl ApprovalGate {
    pub const ALL: [ApprovalGate; 2] = [ApprovalGate::IssuerRenewal, ApprovalGate::RootRemoval];

    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalGate::IssuerRenewal => "IssuerRenewal",
            ApprovalGate::RootRemoval => "RootRemoval",
        }
    }

    /// Whether `spec` asks for this approval.
    pub fn required(self, approvals: &Approvals) -> bool {
        match self {
            ApprovalGate::IssuerRenewal => approvals.before_issuer_renewal,
            ApprovalGate::RootRemoval => approvals.before_root_removal,
        }
    }
}

impl fmt::Display for ApprovalGate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for ApprovalGate {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ApprovalGate::ALL
            .into_iter()
            .find(|g| g.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| format!("unknown step {s:?} to approve (IssuerRenewal or RootRemoval)"))
    }
}

impl Default for TrustAnchorRotationSpec {
    fn default() -> Self {
        Self {
            trust_anchor: CertificateRef::default_trust_anchor(),
            previous_anchor: SecretRef::default_previous_anchor(),
            identity_issuer: CertificateRef::default_identity_issuer(),
            trust_roots: ConfigMapRef::default(),
            control_plane: ControlPlaneRef::default(),
            workload_certificate_refresh_interval: default_refresh_interval(),
            manage_proxy_refresh_env: false,
            trust_domain: default_trust_domain(),
            paused: false,
            stall_timeout: default_stall_timeout(),
            remove_unknown_roots: false,
            automation: Automation::default(),
        }
    }
}

/// The schema of a count: an integer the API server knows (`format: int32`; schemars would
/// say `uint32`, a format the server does not know and warns about on every apply of the
/// CRD), never negative, with an integer minimum.
fn non_negative_int32(schema: &mut schemars::Schema) {
    schema.insert("type".to_string(), "integer".into());
    schema.insert("format".to_string(), "int32".into());
    schema.insert("minimum".to_string(), 0.into());
}

fn positive_int32(schema: &mut schemars::Schema) {
    non_negative_int32(schema);
    schema.insert("minimum".to_string(), 1.into());
}

fn default_refresh_interval() -> String {
    DEFAULT_REFRESH_INTERVAL.to_string()
}

fn default_stall_timeout() -> String {
    DEFAULT_STALL_TIMEOUT.to_string()
}

fn default_trust_domain() -> String {
    DEFAULT_TRUST_DOMAIN.to_string()
}

/// A cert-manager Certificate and the Secret it writes.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CertificateRef {
    /// Namespace of the Certificate and its Secret.
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub namespace: String,
    /// Name of the cert-manager Certificate.
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub certificate: String,
    /// Name of the Secret the Certificate writes (`spec.secretName`).
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub secret: String,
}

impl CertificateRef {
    pub fn default_trust_anchor() -> Self {
        Self {
            namespace: DEFAULT_CERT_MANAGER_NAMESPACE.into(),
            certificate: DEFAULT_TRUST_ANCHOR.into(),
            secret: DEFAULT_TRUST_ANCHOR.into(),
        }
    }

    pub fn default_identity_issuer() -> Self {
        Self {
            namespace: DEFAULT_LINKERD_NAMESPACE.into(),
            certificate: DEFAULT_IDENTITY_ISSUER.into(),
            secret: DEFAULT_IDENTITY_ISSUER.into(),
        }
    }
}

/// A Secret by namespace and name.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretRef {
    /// Namespace of the Secret.
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub namespace: String,
    /// Name of the Secret.
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub name: String,
}

impl SecretRef {
    pub fn default_previous_anchor() -> Self {
        Self {
            namespace: DEFAULT_CERT_MANAGER_NAMESPACE.into(),
            name: DEFAULT_PREVIOUS_ANCHOR.into(),
        }
    }
}

/// The trust-roots ConfigMap and the key that holds the PEM bundle.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConfigMapRef {
    /// Namespace of the ConfigMap.
    #[serde(default = "default_linkerd_namespace")]
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub namespace: String,
    /// Name of the ConfigMap.
    #[serde(default = "default_trust_roots_name")]
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub name: String,
    /// Key that holds the concatenated PEM certificates.
    #[serde(default = "default_trust_roots_key")]
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub key: String,
}

impl Default for ConfigMapRef {
    fn default() -> Self {
        Self {
            namespace: default_linkerd_namespace(),
            name: default_trust_roots_name(),
            key: default_trust_roots_key(),
        }
    }
}

fn default_linkerd_namespace() -> String {
    DEFAULT_LINKERD_NAMESPACE.into()
}
fn default_trust_roots_name() -> String {
    DEFAULT_TRUST_ROOTS.into()
}
fn default_trust_roots_key() -> String {
    DEFAULT_TRUST_ROOTS_KEY.into()
}

/// The Linkerd control plane.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ControlPlaneRef {
    /// Namespace of the Linkerd control plane.
    #[serde(default = "default_linkerd_namespace")]
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub namespace: String,
    /// The identity controller's Deployment. It loads the trust bundle at start and
    /// validates every new issuer against it.
    #[serde(default = "default_identity_deployment")]
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub identity_deployment: String,
    /// The proxy injector's Deployment. It must be Available before any meshed workload
    /// restarts, or restarted pods come up without a proxy.
    #[serde(default = "default_injector_deployment")]
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub proxy_injector_deployment: String,
    /// Every other control-plane Deployment whose proxies read the trust bundle at start.
    #[serde(default = "default_other_deployments")]
    #[schemars(
        length(max = 32),
        inner(
            length(min = 1, max = 253),
            regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
        )
    )]
    pub other_deployments: Vec<String>,
}

impl Default for ControlPlaneRef {
    fn default() -> Self {
        Self {
            namespace: default_linkerd_namespace(),
            identity_deployment: default_identity_deployment(),
            proxy_injector_deployment: default_injector_deployment(),
            other_deployments: default_other_deployments(),
        }
    }
}

impl ControlPlaneRef {
    /// Every control-plane Deployment, the proxy injector first.
    pub fn deployments(&self) -> Vec<String> {
        let mut all = vec![
            self.proxy_injector_deployment.clone(),
            self.identity_deployment.clone(),
        ];
        for d in &self.other_deployments {
            if !all.contains(d) {
                all.push(d.clone());
            }
        }
        all
    }
}

fn default_identity_deployment() -> String {
    DEFAULT_IDENTITY_DEPLOYMENT.into()
}
fn default_injector_deployment() -> String {
    DEFAULT_INJECTOR_DEPLOYMENT.into()
}
fn default_other_deployments() -> Vec<String> {
    vec![DEFAULT_DESTINATION_DEPLOYMENT.into()]
}

// === status ===

/// The phases of a rotation, in the order a rotation walks them:
/// Synced → RefreshingControlPlane → PropagatingTrustRoots → WaitingForIdentityRotation →
/// RenewingWorkloadCerts → RefreshingControlPlane → RemovingOldTrustRoots → Synced.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum Phase {
    /// The bundle holds exactly the current trust anchor; nothing to do.
    Synced,
    /// Control-plane Deployments are restarting onto a changed bundle.
    RefreshingControlPlane,
    /// Waiting for every meshed pod to be restarted with the expanded bundle.
    PropagatingTrustRoots,
    /// Waiting for the identity issuer to be re-issued under the new anchor
    /// (`cmctl renew -n linkerd linkerd-identity-issuer`).
    WaitingForIdentityRotation,
    /// Waiting for every meshed pod's workload certificate to come from the new issuer.
    RenewingWorkloadCerts,
    /// Waiting for every meshed pod to be restarted with the reduced bundle.
    RemovingOldTrustRoots,
}

impl Phase {
    /// Every phase, in declaration order (used for the `trust_rotation_phase` metric).
    pub const ALL: [Phase; 6] = [
        Phase::Synced,
        Phase::RefreshingControlPlane,
        Phase::PropagatingTrustRoots,
        Phase::WaitingForIdentityRotation,
        Phase::RenewingWorkloadCerts,
        Phase::RemovingOldTrustRoots,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            Phase::Synced => "Synced",
            Phase::RefreshingControlPlane => "RefreshingControlPlane",
            Phase::PropagatingTrustRoots => "PropagatingTrustRoots",
            Phase::WaitingForIdentityRotation => "WaitingForIdentityRotation",
            Phase::RenewingWorkloadCerts => "RenewingWorkloadCerts",
            Phase::RemovingOldTrustRoots => "RemovingOldTrustRoots",
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Phase {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Phase::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| format!("unknown phase {s:?}"))
    }
}

/// Observed state of the rotation, written only by the operator.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TrustAnchorRotationStatus {
    /// Current phase of the rotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// The `.metadata.generation` this status was computed for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Name of the step the operator is executing or waiting in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_step: Option<String>,
    /// One record per step of the current rotation, in workflow order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<StepRecord>,
    /// Standard conditions: `Ready` (Synced and nothing to do), `Progressing`, `Blocked`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// What stops the rotation from proceeding and how to fix it; absent when nothing does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocking_message: Option<String>,
    /// Meshed pods (outside the control plane) that carry the current trust bundle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust_bundle: Option<Convergence>,
    /// Meshed pods whose live workload certificate chains to the active issuer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_certificates: Option<Convergence>,
    /// The trust anchor currently in the anchor Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_anchor: Option<CertificateSummary>,
    /// The anchor kept in the previous-anchor Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_anchor: Option<CertificateSummary>,
    /// The identity issuer currently in the issuer Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_issuer: Option<CertificateSummary>,
    /// The accelerated workload-certificate refresh interval currently published to the
    /// data plane; absent when no override is in effect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_certificate_refresh_interval: Option<String>,
    /// Roots in the trust bundle that are neither the trust anchor nor an anchor a rotation
    /// replaced: someone else's (a multicluster peer's root, a root phased in by hand).
    /// Rotations keep them unless `spec.removeUnknownRoots` is true.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub foreign_roots: Vec<CertificateSummary>,
    /// The rotation in progress, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation: Option<RotationRecord>,
    /// The most recent finished rotations, newest first (at most five).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<RotationRecord>,
    /// The operator's own workload restarts in the rotation in progress
    /// (`spec.automation.workloadRestarts: Automatic`): a restart or a new leader resumes
    /// from here without restarting a workload twice.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub workload_restarts: Vec<WorkloadRestartRecord>,
    /// The operator's scheduled renewal of the current trust anchor
    /// (`spec.automation.schedule.renewAnchorBefore`): whether and when it triggered it, and
    /// why. A restarted operator never triggers the same anchor's renewal twice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_renewal: Option<ScheduledRenewalRecord>,
}

/// Progress of one step of the workflow.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StepRecord {
    /// Stable name of the step in the workflow (unique within it).
    pub name: String,
    /// The phase the rotation reports while this step runs.
    pub phase: Phase,
    /// Where the step stands.
    pub state: StepState,
    /// How many times the step has been executed.
    #[serde(default)]
    #[schemars(transform = non_negative_int32)]
    pub attempts: u32,
    /// When the step first started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    /// When the step finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Time>,
    /// When the step last saw something move (a pod converging, the observed state or its
    /// message changing). A wait with nothing moving for `spec.stallTimeout` is a stall.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_progress_time: Option<Time>,
    /// The latest thing the step had to say (what it waits for, or why it is blocked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Where a step stands.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum StepState {
    /// Not started yet.
    Pending,
    /// Started and waiting for the cluster to converge.
    Waiting,
    /// Cannot proceed until a human fixes what `message` says.
    Blocked,
    /// Finished; never executed again within this rotation.
    Done,
}

/// Convergence counts of meshed pods.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Convergence {
    /// Pods that have converged.
    #[schemars(transform = non_negative_int32)]
    pub converged: u32,
    /// Pods that must converge.
    #[schemars(transform = non_negative_int32)]
    pub target: u32,
    /// `converged/target`, for `kubectl get`.
    pub summary: String,
    /// Up to ten pods (`namespace/name`) that have not converged yet.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unconverged: Vec<String>,
    /// When these counts were observed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_at: Option<Time>,
}

impl Convergence {
    /// Counts with a consistent summary and at most ten named stragglers.
    pub fn new(
        converged: u32,
        target: u32,
        mut unconverged: Vec<String>,
        at: Option<Time>,
    ) -> Self {
        unconverged.truncate(10);
        Self {
            converged,
            target,
            summary: format!("{converged}/{target}"),
            unconverged,
            observed_at: at,
        }
    }

    pub fn is_complete(&self) -> bool {
        self.converged == self.target
    }
}

/// Identity of one certificate.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CertificateSummary {
    /// Lowercase hex SHA-256 of the certificate's DER, no colons.
    pub fingerprint: String,
    /// The certificate's subject, for people (never used to identify it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// When the certificate expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_after: Option<Time>,
}

/// One rotation, in progress or finished.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RotationRecord {
    /// Unique id of the rotation (also the trace id of its trace, when tracing is on).
    pub id: String,
    /// What started it, e.g. `trust anchor renewed (fingerprint 3f2a…)`.
    pub trigger: String,
    /// Fingerprint of the anchor being replaced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_anchor: Option<String>,
    /// Fingerprint of the new anchor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_anchor: Option<String>,
    /// Fingerprints of anchors this rotation moved to before the anchor was renewed again
    /// mid-rotation (it was retargeted to the newest one). They stay in the bundle next to
    /// `fromAnchor` until every pod carries the newest anchor, and are removed with it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub superseded_anchors: Vec<String>,
    /// When the rotation started.
    pub started_at: Time,
    /// When it finished (history entries only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Time>,
    /// W3C `traceparent` of the rotation's root span, so every step of one rotation lands
    /// in one trace, across operator restarts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_parent: Option<String>,
    /// The operator's own re-issuance of the identity issuer in this rotation
    /// (`spec.automation.issuerRenewal: Automatic`), recorded once it triggered it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer_renewal: Option<IssuerRenewalRecord>,
    /// Approvals consumed by this rotation (`linkerd trust approve`), oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub approvals: Vec<ApprovalRecord>,
}

/// The operator triggered the identity issuer's re-issuance.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IssuerRenewalRecord {
    /// The rotation id it was triggered for (a rotation retargeted to a newer anchor has a
    /// new id and re-issues the issuer again).
    pub rotation_id: String,
    /// When the operator set `Issuing=True` on the issuer's Certificate.
    pub triggered_at: Time,
    /// Fingerprint of the issuer it replaced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaced_issuer: Option<String>,
}

/// An approval the rotation consumed.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApprovalRecord {
    /// What was approved.
    pub step: ApprovalGate,
    /// The rotation id the approval named.
    pub rotation_id: String,
    /// Who wrote the approval annotation, as the API server recorded it (the field manager
    /// of `metadata.annotations`, e.g. `linkerd-trust`, `kubectl-annotate`, `argocd-controller`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_by: Option<String>,
    /// When the operator consumed it.
    pub consumed_at: Time,
}

// === validation ===

/// Parses a duration in the proxy's grammar (`5m`, `300s`, `1500ms`, `2h`, `1d`, or bare
/// seconds). Anything else is an error naming the accepted forms.
pub fn parse_proxy_duration(value: &str) -> Result<Duration, String> {
    let s = value.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let invalid = || {
        format!(
            "{value:?} is not a proxy duration: use digits followed by one unit of ms, s, m, h \
             or d (for example 5m or 300s); compound values like 1h30m make the proxy exit"
        )
    };
    if digits.is_empty() {
        return Err(invalid());
    }
    let n: u64 = digits.parse().map_err(|_| invalid())?;
    let secs = |mul: u64| {
        n.checked_mul(mul)
            .map(Duration::from_secs)
            .ok_or_else(invalid)
    };
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "" | "s" => secs(1),
        "m" => secs(60),
        "h" => secs(3600),
        "d" => secs(86_400),
        _ => Err(invalid()),
    }
}

impl TrustAnchorRotationSpec {
    /// Checks what the schema cannot fully express. Returns a message for the user.
    /// (An older CRD without this version's patterns may have admitted what is checked here.)
    pub fn validate(&self) -> Result<(), String> {
        let refresh = parse_proxy_duration(&self.workload_certificate_refresh_interval)
            .map_err(|e| format!("spec.workloadCertificateRefreshInterval: {e}"))?;
        if refresh < MIN_REFRESH_INTERVAL {
            return Err(format!(
                "spec.workloadCertificateRefreshInterval: {:?} is shorter than the minimum of {}s: \
                 every proxy would ask identity for a certificate that often",
                self.workload_certificate_refresh_interval,
                MIN_REFRESH_INTERVAL.as_secs()
            ));
        }
        self.stall_timeout()?;
        let label = |field: &str, v: &str| check_name(field, v, NameKind::Label);
        let subdomain = |field: &str, v: &str| check_name(field, v, NameKind::Subdomain);
        label("spec.trustAnchor.namespace", &self.trust_anchor.namespace)?;
        subdomain(
            "spec.trustAnchor.certificate",
            &self.trust_anchor.certificate,
        )?;
        subdomain("spec.trustAnchor.secret", &self.trust_anchor.secret)?;
        label(
            "spec.previousAnchor.namespace",
            &self.previous_anchor.namespace,
        )?;
        subdomain("spec.previousAnchor.name", &self.previous_anchor.name)?;
        label(
            "spec.identityIssuer.namespace",
            &self.identity_issuer.namespace,
        )?;
        subdomain(
            "spec.identityIssuer.certificate",
            &self.identity_issuer.certificate,
        )?;
        subdomain("spec.identityIssuer.secret", &self.identity_issuer.secret)?;
        label("spec.trustRoots.namespace", &self.trust_roots.namespace)?;
        subdomain("spec.trustRoots.name", &self.trust_roots.name)?;
        check_name(
            "spec.trustRoots.key",
            &self.trust_roots.key,
            NameKind::ConfigMapKey,
        )?;
        label("spec.controlPlane.namespace", &self.control_plane.namespace)?;
        for (i, d) in self.control_plane.deployments().iter().enumerate() {
            subdomain(&format!("spec.controlPlane deployment #{}", i + 1), d)?;
        }
        subdomain("spec.trustDomain", &self.trust_domain)?;
        Ok(())
    }

    /// `spec.stallTimeout` as a duration (at least [`MIN_STALL_TIMEOUT`]).
    pub fn stall_timeout(&self) -> Result<Duration, String> {
        let d = parse_proxy_duration(&self.stall_timeout)
            .map_err(|e| format!("spec.stallTimeout: {e}"))?;
        if d < MIN_STALL_TIMEOUT {
            return Err(format!(
                "spec.stallTimeout: {:?} is shorter than the minimum of {}s: a shorter timeout \
                 would report ordinary restarts as stalls",
                self.stall_timeout,
                MIN_STALL_TIMEOUT.as_secs()
            ));
        }
        Ok(d)
    }
}

/// Writes the `minimum`/`maximum` of integer schemas as integers (`0`, not `0.0`):
/// k8s-openapi holds every bound as a float, which reads oddly on an integer field.
fn integer_bounds_as_integers(v: &mut serde_yaml::Value) {
    match v {
        serde_yaml::Value::Mapping(m) => {
            let integer = m.get("type").and_then(serde_yaml::Value::as_str) == Some("integer");
            for (k, child) in m.iter_mut() {
                let bound = matches!(k.as_str(), Some("minimum" | "maximum"));
                match child.as_f64() {
                    Some(f) if integer && bound && f.fract() == 0.0 && f.abs() < 9.0e15 => {
                        *child = serde_yaml::Value::Number((f as i64).into());
                    }
                    _ => integer_bounds_as_integers(child),
                }
            }
        }
        serde_yaml::Value::Sequence(items) => items.iter_mut().for_each(integer_bounds_as_integers),
        _ => {}
    }
}

/// The kinds of name a spec holds, with the API server's rule for each.
#[derive(Clone, Copy)]
enum NameKind {
    Label,
    Subdomain,
    ConfigMapKey,
}

impl NameKind {
    fn rule(self) -> (&'static str, usize, &'static str) {
        match self {
            NameKind::Label => (
                DNS1123_LABEL_PATTERN,
                63,
                "a DNS-1123 label (lowercase letters, digits and '-', starting and ending with a letter or digit)",
            ),
            NameKind::Subdomain => (
                DNS1123_SUBDOMAIN_PATTERN,
                253,
                "a DNS-1123 subdomain (lowercase letters, digits, '-' and '.', each part starting and ending with a letter or digit)",
            ),
            NameKind::ConfigMapKey => (
                CONFIGMAP_KEY_PATTERN,
                253,
                "a ConfigMap key (letters, digits, '-', '_' and '.')",
            ),
        }
    }
}

fn check_name(field: &str, value: &str, kind: NameKind) -> Result<(), String> {
    let (pattern, max, what) = kind.rule();
    let ok = !value.is_empty()
        && value.len() <= max
        && regex::Regex::new(pattern).is_ok_and(|re| re.is_match(value));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{field}: {value:?} is not a valid name: it must be {what} of at most {max} characters"
        ))
    }
}

/// The CRD as YAML, exactly as `crdgen` prints it and as committed in the repository.
pub fn crd_yaml() -> String {
    use kube::CustomResourceExt;
    let crd = TrustAnchorRotation::crd();
    let mut doc = serde_yaml::to_value(&crd).expect("a CRD always serializes");
    integer_bounds_as_integers(&mut doc);
    let body = serde_yaml::to_string(&doc).expect("a CRD always serializes");
    format!(
        "# Generated by `cargo run -p trust-rotation-crds --bin crdgen`. Do not edit.\n---\n{body}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_durations() {
        assert_eq!(parse_proxy_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_proxy_duration("300s"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_proxy_duration("300"), Ok(Duration::from_secs(300)));
        assert_eq!(
            parse_proxy_duration("1500ms"),
            Ok(Duration::from_millis(1500))
        );
        assert_eq!(parse_proxy_duration("1d"), Ok(Duration::from_secs(86_400)));
        for bad in [
            "1h30m",
            "",
            "m",
            "5 m",
            "-5m",
            "5M",
            "5min",
            "99999999999999999999s",
        ] {
            assert!(
                parse_proxy_duration(bad).is_err(),
                "{bad:?} must be refused"
            );
        }
    }

    #[test]
    fn schema_pattern_matches_parser() {
        let re = regex::Regex::new(PROXY_DURATION_PATTERN).unwrap();
        for v in [
            "5m", "300s", "300", "1500ms", "1d", "1h30m", "5min", "", "m",
        ] {
            assert_eq!(re.is_match(v), parse_proxy_duration(v).is_ok(), "{v:?}");
        }
    }

    #[test]
    fn empty_spec_gets_the_guides_defaults() {
        let spec: TrustAnchorRotationSpec = serde_json::from_str("{}").unwrap();
        assert_eq!(spec, TrustAnchorRotationSpec::default());
        assert_eq!(spec.trust_anchor.namespace, "cert-manager");
        assert_eq!(spec.trust_anchor.secret, "linkerd-trust-anchor");
        assert_eq!(spec.identity_issuer.namespace, "linkerd");
        assert_eq!(spec.trust_roots.key, "ca-bundle.crt");
        assert_eq!(spec.workload_certificate_refresh_interval, "5m");
        assert_eq!(
            spec.control_plane.deployments(),
            [
                "linkerd-proxy-injector",
                "linkerd-identity",
                "linkerd-destination"
            ]
        );
    }

    #[test]
    fn phases_serialize_with_the_guides_names() {
        for p in Phase::ALL {
            assert_eq!(serde_json::to_value(p).unwrap(), p.as_str());
            assert_eq!(p.as_str().parse::<Phase>(), Ok(p));
        }
    }

    /// String formats a Kubernetes API server knows (apiextensions-apiserver's
    /// `supportedVersionedFormats`); integers know int32/int64, numbers float/double.
    const KNOWN_STRING_FORMATS: &[&str] = &[
        "bsonobjectid",
        "uri",
        "email",
        "hostname",
        "ipv4",
        "ipv6",
        "cidr",
        "mac",
        "uuid",
        "uuid3",
        "uuid4",
        "uuid5",
        "isbn",
        "isbn10",
        "isbn13",
        "creditcard",
        "ssn",
        "hexcolor",
        "rgbcolor",
        "byte",
        "password",
        "date",
        "duration",
        "date-time",
        "datetime",
        "k8s-short-name",
        "k8s-long-name",
    ];

    /// Every schema node of a JSONSchemaProps tree, with its path.
    fn walk<'a>(
        s: &'a serde_json::Value,
        path: String,
        out: &mut Vec<(String, &'a serde_json::Value)>,
    ) {
        if !s.is_object() {
            return;
        }
        out.push((path.clone(), s));
        for (k, v) in s["properties"].as_object().into_iter().flatten() {
            walk(v, format!("{path}.{k}"), out);
        }
        walk(&s["items"], format!("{path}[]"), out);
        walk(&s["additionalProperties"], format!("{path}{{}}"), out);
        for k in ["allOf", "anyOf", "oneOf"] {
            for (i, v) in s[k].as_array().into_iter().flatten().enumerate() {
                walk(v, format!("{path}.{k}[{i}]"), out);
            }
        }
        walk(&s["not"], format!("{path}.not"), out);
    }

    /// Why the API server would warn about or misread this node, if it would.
    fn schema_problem(node: &serde_json::Value) -> Option<String> {
        let ty = node["type"].as_str().unwrap_or("");
        if let Some(format) = node["format"].as_str() {
            let known = match ty {
                "" | "string" => KNOWN_STRING_FORMATS.contains(&format),
                "integer" => matches!(format, "int32" | "int64"),
                "number" => matches!(format, "float" | "double"),
                _ => false,
            };
            if !known {
                return Some(format!("format {format:?} is unknown for type {ty:?}"));
            }
        }
        if ty == "integer" {
            for bound in ["minimum", "maximum"] {
                if node.get(bound).is_some_and(|b| !b.is_i64() && !b.is_u64()) {
                    return Some(format!(
                        "{bound} {} of an integer is not an integer",
                        node[bound]
                    ));
                }
            }
        }
        None
    }

    #[test]
    fn generated_schema_uses_only_formats_the_api_server_knows() {
        // The CRD as shipped (crdgen's YAML, which the chart and `kubectl apply` use).
        let crd: serde_json::Value = serde_yaml::from_str(&crd_yaml()).unwrap();
        let mut nodes = Vec::new();
        for v in crd["spec"]["versions"].as_array().unwrap() {
            walk(
                &v["schema"]["openAPIV3Schema"],
                v["name"].as_str().unwrap().to_string(),
                &mut nodes,
            );
        }
        assert!(
            nodes.len() > 50,
            "the walk sees the whole schema ({} nodes)",
            nodes.len()
        );
        let problems: Vec<String> = nodes
            .iter()
            .filter_map(|(path, n)| schema_problem(n).map(|p| format!("{path}: {p}")))
            .collect();
        assert!(
            problems.is_empty(),
            "the API server would warn or misread: {problems:#?}"
        );
        // The CRD object the tests create with kube-rs has the same formats.
        use kube::CustomResourceExt;
        let typed = serde_json::to_value(TrustAnchorRotation::crd()).unwrap();
        let mut typed_nodes = Vec::new();
        for v in typed["spec"]["versions"].as_array().unwrap() {
            walk(
                &v["schema"]["openAPIV3Schema"],
                String::new(),
                &mut typed_nodes,
            );
        }
        assert!(typed_nodes
            .iter()
            .all(|(_, n)| schema_problem(n).is_none_or(|p| p.contains("minimum"))));
        let counts = nodes
            .iter()
            .filter(|(p, _)| {
                p.ends_with(".converged") || p.ends_with(".target") || p.ends_with(".attempts")
            })
            .count();
        assert_eq!(counts, 5, "every count keeps its schema");
        assert!(nodes
            .iter()
            .filter(|(p, _)| p.ends_with(".converged"))
            .all(|(_, n)| n["minimum"] == 0 && n["format"] == "int32"));
    }

    #[test]
    fn the_schema_check_catches_what_the_server_warns_about() {
        let bad = serde_json::json!({"type": "integer", "format": "uint32", "minimum": 0.0});
        assert!(schema_problem(&bad).unwrap().contains("uint32"));
        let float_min = serde_json::json!({"type": "integer", "format": "int32", "minimum": 0.0});
        assert!(schema_problem(&float_min).unwrap().contains("minimum"));
        let fine = serde_json::json!({"type": "string", "format": "date-time"});
        assert_eq!(schema_problem(&fine), None);
    }

    #[test]
    fn the_crd_admits_only_the_name_cluster() {
        use kube::CustomResourceExt;
        let crd = serde_json::to_value(TrustAnchorRotation::crd()).unwrap();
        let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
        let rules = schema["x-kubernetes-validations"]
            .as_array()
            .expect("root rules");
        assert_eq!(rules.len(), 1, "{rules:?}");
        assert_eq!(rules[0]["rule"], NAME_RULE);
        assert_eq!(rules[0]["message"], NAME_RULE_MESSAGE);
        assert_eq!(
            DEFAULT_ROTATION_NAME, "cluster",
            "the chart's name is the one admitted"
        );
    }

    #[test]
    fn the_crd_bounds_every_name_it_holds() {
        use kube::CustomResourceExt;
        let crd = serde_json::to_value(TrustAnchorRotation::crd()).unwrap();
        let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
            ["properties"];
        for (obj, field, pattern, max) in [
            ("trustAnchor", "namespace", DNS1123_LABEL_PATTERN, 63),
            ("trustAnchor", "secret", DNS1123_SUBDOMAIN_PATTERN, 253),
            ("trustAnchor", "certificate", DNS1123_SUBDOMAIN_PATTERN, 253),
            ("previousAnchor", "name", DNS1123_SUBDOMAIN_PATTERN, 253),
            ("identityIssuer", "secret", DNS1123_SUBDOMAIN_PATTERN, 253),
            ("trustRoots", "key", CONFIGMAP_KEY_PATTERN, 253),
            ("controlPlane", "namespace", DNS1123_LABEL_PATTERN, 63),
            (
                "controlPlane",
                "identityDeployment",
                DNS1123_SUBDOMAIN_PATTERN,
                253,
            ),
        ] {
            let f = &spec[obj]["properties"][field];
            assert_eq!(f["pattern"], pattern, "{obj}.{field}: {f}");
            assert_eq!(f["maxLength"], max, "{obj}.{field}: {f}");
        }
        let others = &spec["controlPlane"]["properties"]["otherDeployments"];
        assert_eq!(
            others["items"]["pattern"], DNS1123_SUBDOMAIN_PATTERN,
            "{others}"
        );
        assert_eq!(spec["trustDomain"]["pattern"], DNS1123_SUBDOMAIN_PATTERN);
    }

    #[test]
    fn validate_names_the_field_and_the_rule() {
        let mut spec = TrustAnchorRotationSpec::default();
        assert_eq!(spec.validate(), Ok(()));
        spec.trust_anchor.namespace = "Cert_Manager".into();
        let e = spec.validate().unwrap_err();
        assert!(
            e.contains("spec.trustAnchor.namespace") && e.contains("DNS-1123 label"),
            "{e}"
        );
        let mut spec = TrustAnchorRotationSpec::default();
        spec.control_plane.other_deployments = vec!["ok".into(), "-bad".into()];
        let e = spec.validate().unwrap_err();
        assert!(
            e.contains("spec.controlPlane") && e.contains("\"-bad\""),
            "{e}"
        );
        let mut spec = TrustAnchorRotationSpec::default();
        spec.trust_roots.name = "x".repeat(254);
        assert!(spec.validate().unwrap_err().contains("at most 253"));
        let mut spec = TrustAnchorRotationSpec::default();
        spec.trust_roots.key = "ca bundle".into();
        assert!(spec.validate().unwrap_err().contains("ConfigMap key"));
    }

    #[test]
    fn refresh_interval_has_a_minimum() {
        let mut spec = TrustAnchorRotationSpec {
            workload_certificate_refresh_interval: "500ms".into(),
            ..Default::default()
        };
        let e = spec.validate().unwrap_err();
        assert!(
            e.contains("workloadCertificateRefreshInterval") && e.contains("minimum of 1s"),
            "{e}"
        );
        spec.workload_certificate_refresh_interval = "1s".into();
        assert_eq!(spec.validate(), Ok(()));
    }

    #[test]
    fn committed_crd_is_fresh() {
        let committed = include_str!("../trust.linkerd.io_trustanchorrotations.yaml");
        assert!(
            committed == crd_yaml(),
            "crds/trust.linkerd.io_trustanchorrotations.yaml is stale: run `make generate`"
        );
    }
}
