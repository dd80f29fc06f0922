//! Default names of every resource a rotation touches, as the user guide and the Linkerd
//! documentation use them. The CLI's flags and the CRD's defaults both come from here.

/// Namespace of cert-manager and of the trust-anchor Certificate.
pub const DEFAULT_CERT_MANAGER_NAMESPACE: &str = "cert-manager";
/// Linkerd's control-plane namespace.
pub const DEFAULT_LINKERD_NAMESPACE: &str = "linkerd";
/// The self-signed Issuer that signs the trust anchor.
pub const DEFAULT_TRUST_ROOT_ISSUER: &str = "linkerd-trust-root-issuer";
/// The trust anchor's Certificate and Secret.
pub const DEFAULT_TRUST_ANCHOR: &str = "linkerd-trust-anchor";
/// The Secret holding a copy of the previous trust anchor.
pub const DEFAULT_PREVIOUS_ANCHOR: &str = "linkerd-previous-anchor";
/// The CA ClusterIssuer (backed by the anchor Secret) that signs the identity issuer.
pub const DEFAULT_IDENTITY_CLUSTER_ISSUER: &str = "linkerd-identity-issuer";
/// The identity issuer's Certificate and Secret.
pub const DEFAULT_IDENTITY_ISSUER: &str = "linkerd-identity-issuer";
/// The trust-roots ConfigMap.
pub const DEFAULT_TRUST_ROOTS: &str = "linkerd-identity-trust-roots";
/// The key of the trust-roots ConfigMap that holds the PEM bundle.
pub const DEFAULT_TRUST_ROOTS_KEY: &str = "ca-bundle.crt";
/// Control-plane Deployments.
pub const DEFAULT_IDENTITY_DEPLOYMENT: &str = "linkerd-identity";
pub const DEFAULT_DESTINATION_DEPLOYMENT: &str = "linkerd-destination";
pub const DEFAULT_INJECTOR_DEPLOYMENT: &str = "linkerd-proxy-injector";
/// Default accelerated workload-certificate refresh interval.
pub const DEFAULT_REFRESH_INTERVAL: &str = "5m";
/// How long a waiting step may see nothing move before it is reported as stalled.
pub const DEFAULT_STALL_TIMEOUT: &str = "5m";
/// The shortest `spec.stallTimeout` accepted.
pub const MIN_STALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// The shortest `spec.workloadCertificateRefreshInterval` accepted.
pub const MIN_REFRESH_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);
/// Linkerd's default trust domain.
pub const DEFAULT_TRUST_DOMAIN: &str = "cluster.local";
/// Name of the TrustAnchorRotation the chart creates.
pub const DEFAULT_ROTATION_NAME: &str = "cluster";

/// Annotation the proxy injector sets: hex SHA-256 of the exact bundle bytes.
pub const TRUST_ROOT_SHA256_ANNOTATION: &str = "linkerd.io/trust-root-sha256";
/// Label on every meshed pod naming the control-plane namespace.
pub const CONTROL_PLANE_NS_LABEL: &str = "linkerd.io/control-plane-ns";
/// Annotation carrying extra proxy environment (a JSON list of EnvVar).
pub const PROXY_ADDITIONAL_ENV_ANNOTATION: &str = "config.linkerd.io/proxy-additional-env";
/// The proxy's trust-anchor environment variable.
pub const TRUST_ANCHORS_ENV: &str = "LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS";
/// The proxy's maximum identity refresh interval variable.
pub const MAX_REFRESH_ENV: &str = "LINKERD2_PROXY_IDENTITY_MAX_REFRESH";
/// The proxy container's name.
pub const PROXY_CONTAINER: &str = "linkerd-proxy";
/// The proxy admin port.
pub const PROXY_ADMIN_PORT: u16 = 4191;

/// Where releases publish the charts (OCI artifacts), as `helm install <this>/<chart>` takes
/// them. The project's org is the one in the workspace's `repository` (trust-cli's
/// `project_name` test holds them together).
pub const CHART_REGISTRY: &str = "oci://ghcr.io/linkerd-trust/charts";

/// `helm install` of the CRD chart then the operator chart from the release matching `version`.
pub fn operator_install_command(namespace: &str, version: &str) -> String {
    format!(
        "helm install -n {namespace} trust-rotation-operator-crds {CHART_REGISTRY}/trust-rotation-operator-crds --version {version} --wait && \
         helm install -n {namespace} trust-rotation-operator {CHART_REGISTRY}/trust-rotation-operator --version {version} --wait"
    )
}
