//! `linkerd trust check`: cert-manager, the Linkerd PKI it manages, the trust bundle and the
//! operator, checked the way `linkerd check` checks Linkerd, in its exact output formats.

pub mod format;

use crate::certmanager;
use crate::client::{explain, is_not_found, ClientArgs};
use crate::goflags::{format_go_duration, parse_duration_flag, parse_go_bool, parse_go_duration};
use crate::names::{OperatorNames, PkiNames};
use format::{CheckOutput, CheckResult, Outcome};
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, DynamicObject, ListParams};
use std::time::Duration;
use tokio::sync::OnceCell;
use trust_rotation_crds::TrustAnchorRotation;
use trust_rotation_steps::bundle::Bundle;
use trust_rotation_steps::pki::{parse_pem_certificates, verify_chain, Certificate};

/// Where every check's hint lives: `docs/checks.md` of this repository, one heading per anchor.
pub const HINT_BASE: &str =
    "https://github.com/linkerd-trust/trust-rotation-operator/blob/main/docs/checks.md#";

/// How long before expiry the anchor check warns.
pub const ANCHOR_WARN_WITHIN: Duration = Duration::from_secs(60 * 86_400);

#[derive(Debug, Clone, clap::Args)]
pub struct CheckArgs {
    /// Only check the prerequisites of the operator (cert-manager, the PKI, the trust bundle)
    #[arg(long)]
    pub pre: bool,
    /// Output format: table, json or short
    #[arg(short = 'o', long, value_enum, default_value = "table")]
    pub output: CheckOutput,
    /// Retry checks that may become healthy for up to this long (Go duration, e.g. 5m0s)
    #[arg(long, default_value = "5m0s", value_parser = parse_go_duration, value_name = "DURATION")]
    pub wait: Duration,
    /// Fail (not just warn) when the trust anchor expires within this duration (e.g. 720h, 30d)
    #[arg(long, value_parser = parse_duration_flag, value_name = "DURATION")]
    pub fail_within: Option<Duration>,
    /// Accepted for `linkerd check` compatibility (namespace of data-plane checks); unused
    #[arg(short = 'n', long, value_name = "NS")]
    pub namespace: Option<String>,
    /// Accepted for `linkerd check` compatibility; unused
    #[arg(long, value_name = "ADDR")]
    pub api_addr: Option<String>,
    /// Accepted for `linkerd check` compatibility (`--proxy=false`); unused
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = parse_go_bool, value_name = "BOOL")]
    pub proxy: Option<bool>,
    /// Accepted for `linkerd check` compatibility (`--verbose=false`); unused
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = parse_go_bool, value_name = "BOOL")]
    pub verbose: Option<bool>,
    #[command(flatten)]
    pub names: PkiNames,
    #[command(flatten)]
    pub operator: OperatorNames,
}

impl CheckArgs {
    /// Parses `check` arguments alone (for tests and embedding); exits on bad input like clap.
    pub fn parse_args(args: &[&str]) -> Self {
        #[derive(clap::Parser)]
        struct Wrapper {
            #[command(flatten)]
            args: CheckArgs,
        }
        <Wrapper as clap::Parser>::parse_from(args).args
    }
}

/// The categories, in the order they run.
pub const CAT_KUBE: &str = "linkerd-trust-kubernetes-api";
pub const CAT_CERT_MANAGER: &str = "linkerd-trust-cert-manager";
pub const CAT_PKI: &str = "linkerd-trust-pki";
pub const CAT_BUNDLE: &str = "linkerd-trust-bundle";
pub const CAT_OPERATOR: &str = "linkerd-trust-operator";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Id {
    ClientInit,
    ApiQuery,
    CertManagerCrds,
    CertManagerAvailable,
    RootIssuerReady,
    AnchorCertificateReady,
    AnchorRotationPolicy,
    ClusterIssuerReady,
    IssuerCertificateReady,
    AnchorIsCa,
    AnchorAlgorithm,
    AnchorTimeValid,
    AnchorNotExpiringSoon,
    AnchorFailWithin,
    IssuerAlgorithm,
    IssuerTimeValid,
    IssuerInBundle,
    TrustRootsExist,
    TrustRootsValid,
    TrustRootsIncludeAnchor,
    NoTrustManager,
    CrdInstalled,
    OperatorAvailable,
    RotationExists,
    RotationNotBlocked,
    RotationNotPaused,
}

/// One check's definition.
#[derive(Debug, Clone)]
pub struct Spec {
    id: Id,
    pub category: &'static str,
    pub description: String,
    pub anchor: &'static str,
    /// Reported as a warning (‼) when it fails; never fails the run.
    pub warning: bool,
    /// Stop running checks after this one fails.
    pub fatal: bool,
    /// Retry until `--wait` expires.
    pub retry: bool,
}

fn spec(id: Id, category: &'static str, description: &str, anchor: &'static str) -> Spec {
    Spec {
        id,
        category,
        description: description.to_string(),
        anchor,
        warning: false,
        fatal: false,
        retry: false,
    }
}

impl Spec {
    fn warning(mut self) -> Self {
        self.warning = true;
        self
    }
    fn fatal(mut self) -> Self {
        self.fatal = true;
        self
    }
    fn retry(mut self) -> Self {
        self.retry = true;
        self
    }
    pub fn hint(&self) -> String {
        format!("{HINT_BASE}{}", self.anchor)
    }
}

/// Every check that runs with these options, in order.
pub fn plan(pre: bool, fail_within: Option<Duration>) -> Vec<Spec> {
    use Id::*;
    let mut v = vec![
        spec(
            ClientInit,
            CAT_KUBE,
            "can initialize the client",
            "ltr-k8s-api",
        )
        .fatal(),
        spec(
            ApiQuery,
            CAT_KUBE,
            "can query the Kubernetes API",
            "ltr-k8s-api",
        )
        .fatal(),
        spec(
            CertManagerCrds,
            CAT_CERT_MANAGER,
            "cert-manager CRDs are installed",
            "ltr-cert-manager-crds",
        )
        .fatal(),
        spec(
            CertManagerAvailable,
            CAT_CERT_MANAGER,
            "cert-manager Deployments are available",
            "ltr-cert-manager-available",
        )
        .retry(),
        spec(
            RootIssuerReady,
            CAT_PKI,
            "trust root Issuer exists and is ready",
            "ltr-root-issuer-ready",
        )
        .retry(),
        spec(
            AnchorCertificateReady,
            CAT_PKI,
            "trust anchor Certificate exists and is ready",
            "ltr-anchor-certificate-ready",
        )
        .retry(),
        spec(
            AnchorRotationPolicy,
            CAT_PKI,
            "trust anchor Certificate uses rotationPolicy Always",
            "ltr-anchor-rotation-policy",
        )
        .warning(),
        spec(
            ClusterIssuerReady,
            CAT_PKI,
            "identity issuer ClusterIssuer exists and is ready",
            "ltr-cluster-issuer-ready",
        )
        .retry(),
        spec(
            IssuerCertificateReady,
            CAT_PKI,
            "identity issuer Certificate exists and is ready",
            "ltr-issuer-certificate-ready",
        )
        .retry(),
        spec(
            AnchorIsCa,
            CAT_PKI,
            "trust anchor is a CA certificate",
            "ltr-anchor-is-ca",
        ),
        spec(
            AnchorAlgorithm,
            CAT_PKI,
            "trust anchor is using supported crypto algorithm",
            "ltr-anchor-algorithm",
        ),
        spec(
            AnchorTimeValid,
            CAT_PKI,
            "trust anchor is within its validity period",
            "ltr-anchor-time-valid",
        ),
        spec(
            AnchorNotExpiringSoon,
            CAT_PKI,
            "trust anchor is valid for at least 60 days",
            "ltr-anchor-not-expiring-soon",
        )
        .warning(),
    ];
    if let Some(d) = fail_within {
        v.push(spec(
            AnchorFailWithin,
            CAT_PKI,
            &format!(
                "trust anchor is valid for at least {}",
                format_go_duration(d)
            ),
            "ltr-anchor-fail-within",
        ));
    }
    v.extend([
        spec(
            IssuerAlgorithm,
            CAT_PKI,
            "issuer cert is using supported crypto algorithm",
            "ltr-issuer-algorithm",
        ),
        spec(
            IssuerTimeValid,
            CAT_PKI,
            "issuer cert is within its validity period",
            "ltr-issuer-time-valid",
        ),
        spec(
            IssuerInBundle,
            CAT_PKI,
            "issuer cert is issued by a trust anchor in the bundle",
            "ltr-issuer-in-bundle",
        ),
        spec(
            TrustRootsExist,
            CAT_BUNDLE,
            "trust roots ConfigMap exists",
            "ltr-trust-roots-exist",
        ),
        spec(
            TrustRootsValid,
            CAT_BUNDLE,
            "trust roots contain only valid certificates",
            "ltr-trust-roots-valid",
        ),
        spec(
            TrustRootsIncludeAnchor,
            CAT_BUNDLE,
            "trust roots include the current trust anchor",
            "ltr-trust-roots-include-anchor",
        ),
        spec(
            NoTrustManager,
            CAT_BUNDLE,
            "no trust-manager Bundle manages the trust roots",
            "ltr-no-trust-manager",
        ),
    ]);
    if !pre {
        v.extend([
            spec(
                CrdInstalled,
                CAT_OPERATOR,
                "TrustAnchorRotation CRD is installed",
                "ltr-crd-installed",
            )
            .fatal(),
            spec(
                OperatorAvailable,
                CAT_OPERATOR,
                "trust-rotation-operator Deployment is available",
                "ltr-operator-available",
            )
            .retry(),
            spec(
                RotationExists,
                CAT_OPERATOR,
                "TrustAnchorRotation exists",
                "ltr-rotation-exists",
            ),
            spec(
                RotationNotBlocked,
                CAT_OPERATOR,
                "trust anchor rotation is not blocked",
                "ltr-rotation-not-blocked",
            ),
            spec(
                RotationNotPaused,
                CAT_OPERATOR,
                "trust anchor rotation is not paused",
                "ltr-rotation-not-paused",
            )
            .warning(),
        ]);
    }
    v
}

/// What the checks share: the client, names, and resources read once.
pub struct Ctx {
    client_args: ClientArgs,
    client: Option<kube::Client>,
    linkerd_ns: String,
    names: PkiNames,
    op: OperatorNames,
    fail_within: Option<Duration>,
    now: Timestamp,
    anchor: OnceCell<Result<Certificate, String>>,
    issuer_chain: OnceCell<Result<Vec<Certificate>, String>>,
    trust_roots: OnceCell<Result<String, String>>,
    rotation: OnceCell<Result<TrustAnchorRotation, String>>,
    retry_notice: bool,
    /// Set when the last run found a resource missing: retrying a missing resource for the
    /// whole `--wait` only delays the answer (and `linkerd check` waits on us), so such
    /// failures are reported at once; resources that exist but are not ready are retried.
    missing: std::sync::atomic::AtomicBool,
}

impl Ctx {
    pub fn new(client_args: ClientArgs, linkerd_ns: String, args: &CheckArgs) -> Self {
        Self {
            client_args,
            client: None,
            linkerd_ns,
            names: args.names.clone(),
            op: args.operator.clone(),
            fail_within: args.fail_within,
            now: Timestamp::now(),
            anchor: OnceCell::new(),
            issuer_chain: OnceCell::new(),
            trust_roots: OnceCell::new(),
            rotation: OnceCell::new(),
            retry_notice: false,
            missing: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Tell the user on stderr when a check is being retried (like Linkerd's spinner; only
    /// for people at a terminal, never in JSON mode).
    pub fn set_retry_notice(&mut self, on: bool) {
        self.retry_notice = on;
    }

    fn mark_missing(&self) {
        self.missing
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Runs one check, noting whether it failed because something does not exist.
    async fn run_once(&mut self, id: Id) -> (Result<(), String>, bool) {
        self.missing
            .store(false, std::sync::atomic::Ordering::Relaxed);
        let res = self.run(id).await;
        (res, self.missing.load(std::sync::atomic::Ordering::Relaxed))
    }

    fn client(&self) -> Result<&kube::Client, String> {
        self.client
            .as_ref()
            .ok_or_else(|| "the Kubernetes client is not initialized".to_string())
    }

    fn dynamic(
        &self,
        ar: &kube::api::ApiResource,
        ns: Option<&str>,
    ) -> Result<Api<DynamicObject>, String> {
        let c = self.client()?.clone();
        Ok(match ns {
            Some(ns) => Api::namespaced_with(c, ns, ar),
            None => Api::all_with(c, ar),
        })
    }

    async fn get_dynamic(
        &self,
        ar: &kube::api::ApiResource,
        ns: Option<&str>,
        name: &str,
        missing_hint: &str,
    ) -> Result<DynamicObject, String> {
        let what = match ns {
            Some(ns) => format!("{} {ns}/{name}", ar.kind),
            None => format!("{} {name}", ar.kind),
        };
        self.dynamic(ar, ns)?.get(name).await.map_err(|e| {
            if is_not_found(&e) {
                self.mark_missing();
                format!("{what} not found: {missing_hint}")
            } else {
                explain(&e, &format!("reading {what}"))
            }
        })
    }

    async fn secret_certs(
        &self,
        ns: &str,
        name: &str,
        flag: &str,
    ) -> Result<Vec<Certificate>, String> {
        let what = format!("Secret {ns}/{name}");
        let secret = Api::<Secret>::namespaced(self.client()?.clone(), ns)
            .get(name)
            .await
            .map_err(|e| {
                if is_not_found(&e) {
                    format!("{what} not found: cert-manager has not issued it yet (or pass {flag})")
                } else {
                    explain(&e, &format!("reading {what}"))
                }
            })?;
        let crt = secret
            .data
            .as_ref()
            .and_then(|d| d.get("tls.crt"))
            .ok_or_else(|| format!("{what} has no tls.crt"))?;
        let text =
            std::str::from_utf8(&crt.0).map_err(|_| format!("{what} tls.crt is not PEM text"))?;
        parse_pem_certificates(text).map_err(|e| format!("{what} tls.crt: {e}"))
    }

    async fn anchor(&self) -> Result<&Certificate, String> {
        self.anchor
            .get_or_init(|| async {
                let ns = &self.names.cert_manager_namespace;
                let certs = self
                    .secret_certs(ns, self.names.anchor_secret(), "--trust-anchor-secret")
                    .await?;
                certs.into_iter().next().ok_or_else(|| {
                    format!(
                        "Secret {ns}/{} holds no certificate",
                        self.names.anchor_secret()
                    )
                })
            })
            .await
            .as_ref()
            .map_err(Clone::clone)
    }

    async fn issuer_chain(&self) -> Result<&[Certificate], String> {
        self.issuer_chain
            .get_or_init(|| async {
                self.secret_certs(
                    &self.linkerd_ns,
                    self.names.issuer_secret(),
                    "--identity-issuer-secret",
                )
                .await
            })
            .await
            .as_deref()
            .map_err(Clone::clone)
    }

    async fn issuer(&self) -> Result<&Certificate, String> {
        self.issuer_chain()
            .await?
            .first()
            .ok_or_else(|| "the identity issuer Secret holds no certificate".to_string())
    }

    async fn trust_roots(&self) -> Result<&str, String> {
        self.trust_roots
            .get_or_init(|| async {
                let ns = &self.linkerd_ns;
                let name = &self.names.trust_roots;
                let what = format!("ConfigMap {ns}/{name}");
                let cm = Api::<ConfigMap>::namespaced(self.client()?.clone(), ns)
                    .get(name)
                    .await
                    .map_err(|e| {
                        if is_not_found(&e) {
                            format!("{what} not found: seed it with `linkerd trust bundle | kubectl apply -f -`")
                        } else {
                            explain(&e, &format!("reading {what}"))
                        }
                    })?;
                cm.data
                    .and_then(|mut d| d.remove(&self.names.trust_roots_key))
                    .ok_or_else(|| {
                        format!(
                            "{what} has no key {:?}: seed it with `linkerd trust bundle | kubectl apply -f -`",
                            self.names.trust_roots_key
                        )
                    })
            })
            .await
            .as_deref()
            .map_err(Clone::clone)
    }

    async fn bundle(&self) -> Result<Bundle, String> {
        let text = self.trust_roots().await?;
        Bundle::parse(text).map_err(|e| {
            format!(
                "ConfigMap {}/{} key {}: {e}",
                self.linkerd_ns, self.names.trust_roots, self.names.trust_roots_key
            )
        })
    }

    async fn rotation(&self) -> Result<&TrustAnchorRotation, String> {
        self.rotation
            .get_or_init(|| async {
                let name = &self.op.rotation;
                Api::<TrustAnchorRotation>::all(self.client()?.clone())
                    .get(name)
                    .await
                    .map_err(|e| {
                        if is_not_found(&e) {
                            format!(
                                "TrustAnchorRotation {name} not found: the operator chart creates it; \
                                 reinstall the chart or `kubectl apply` one named {name}"
                            )
                        } else {
                            explain(&e, &format!("reading TrustAnchorRotation {name}"))
                        }
                    })
            })
            .await
            .as_ref()
            .map_err(Clone::clone)
    }

    async fn run(&mut self, id: Id) -> Result<(), String> {
        use Id::*;
        let cm_ns = self.names.cert_manager_namespace.clone();
        match id {
            ClientInit => {
                let client = self
                    .client_args
                    .client()
                    .await
                    .map_err(|e| format!("{e:#}"))?;
                self.client = Some(client);
                Ok(())
            }
            ApiQuery => self
                .client()?
                .apiserver_version()
                .await
                .map(|_| ())
                .map_err(|e| explain(&e, "querying the Kubernetes API")),
            CertManagerCrds => {
                let api = self.dynamic(&certmanager::certificate(), None)?;
                match api.list_metadata(&ListParams::default().limit(1)).await {
                    Ok(_) => Ok(()),
                    Err(e) if is_not_found(&e) => Err(
                        "the cert-manager CRDs (certificates.cert-manager.io) are not installed: \
                         install cert-manager with crds.enabled=true"
                            .into(),
                    ),
                    Err(e) => Err(explain(&e, "listing cert-manager Certificates")),
                }
            }
            CertManagerAvailable => {
                let list = Api::<Deployment>::namespaced(self.client()?.clone(), &cm_ns)
                    .list(&ListParams::default())
                    .await
                    .map_err(|e| explain(&e, &format!("listing Deployments in {cm_ns}")))?;
                if list.items.is_empty() {
                    return Err(format!(
                        "no Deployments in namespace {cm_ns}: install cert-manager there (or pass --cert-manager-namespace)"
                    ));
                }
                let unavailable: Vec<String> = list
                    .items
                    .iter()
                    .filter(|d| !deployment_available(d))
                    .map(|d| d.metadata.name.clone().unwrap_or_default())
                    .collect();
                if unavailable.is_empty() {
                    Ok(())
                } else {
                    Err(format!(
                        "not available in {cm_ns}: {}",
                        unavailable.join(", ")
                    ))
                }
            }
            RootIssuerReady => {
                let name = &self.names.trust_root_issuer;
                let obj = self
                    .get_dynamic(
                        &certmanager::issuer(),
                        Some(&cm_ns),
                        name,
                        "install the linkerd-cert-manager chart (or pass --trust-root-issuer)",
                    )
                    .await?;
                certmanager::ready(&obj, &format!("Issuer {cm_ns}/{name}"))
            }
            AnchorCertificateReady => {
                let obj = self.anchor_certificate().await?;
                certmanager::ready(
                    &obj,
                    &format!("Certificate {cm_ns}/{}", self.names.trust_anchor),
                )
            }
            AnchorRotationPolicy => {
                let obj = self.anchor_certificate().await?;
                let policy = obj
                    .data
                    .pointer("/spec/privateKey/rotationPolicy")
                    .and_then(|v| v.as_str())
                    .unwrap_or("Never (unset)");
                if policy == "Always" {
                    Ok(())
                } else {
                    Err(format!(
                        "Certificate {cm_ns}/{} has privateKey.rotationPolicy {policy}: a renewed anchor \
                         keeps its key; set it to Always",
                        self.names.trust_anchor
                    ))
                }
            }
            ClusterIssuerReady => {
                let name = &self.names.identity_cluster_issuer;
                let obj = self
                    .get_dynamic(&certmanager::cluster_issuer(), None, name, "install the linkerd-cert-manager chart (or pass --identity-cluster-issuer)")
                    .await?;
                certmanager::ready(&obj, &format!("ClusterIssuer {name}"))
            }
            IssuerCertificateReady => {
                let ns = self.linkerd_ns.clone();
                let name = &self.names.identity_issuer;
                let obj = self
                    .get_dynamic(
                        &certmanager::certificate(),
                        Some(&ns),
                        name,
                        "install the linkerd-cert-manager chart (or pass --identity-issuer)",
                    )
                    .await?;
                certmanager::ready(&obj, &format!("Certificate {ns}/{name}"))
            }
            AnchorIsCa => {
                let a = self.anchor().await?;
                if a.is_ca() {
                    Ok(())
                } else {
                    Err(format!("the trust anchor {} is not a CA (basicConstraints CA:FALSE or missing); set isCA: true on the Certificate", a.subject()))
                }
            }
            AnchorAlgorithm => {
                let a = self.anchor().await?;
                if a.key_algorithm().is_supported_for_anchor() {
                    Ok(())
                } else {
                    Err(format!(
                        "the trust anchor uses {}; Linkerd supports ECDSA P-256/P-384 and RSA ≥ 2048",
                        a.key_algorithm()
                    ))
                }
            }
            AnchorTimeValid => time_valid(self.anchor().await?, self.now, "trust anchor"),
            AnchorNotExpiringSoon => expiring(
                self.anchor().await?,
                self.now,
                ANCHOR_WARN_WITHIN,
                "trust anchor",
            ),
            AnchorFailWithin => {
                let d = self.fail_within.unwrap_or(ANCHOR_WARN_WITHIN);
                expiring(self.anchor().await?, self.now, d, "trust anchor")
            }
            IssuerAlgorithm => {
                let issuer = self.issuer().await?;
                if issuer.key_algorithm().is_ecdsa_p256() {
                    Ok(())
                } else {
                    Err(format!(
                        "the identity issuer uses {}; Linkerd requires ECDSA P-256 (privateKey.algorithm: ECDSA, size: 256)",
                        issuer.key_algorithm()
                    ))
                }
            }
            IssuerTimeValid => time_valid(self.issuer().await?, self.now, "issuer certificate"),
            IssuerInBundle => {
                let chain = self.issuer_chain().await?.to_vec();
                let bundle = self.bundle().await?;
                verify_chain(&chain, bundle.certs(), None).map(|_| ()).map_err(|e| {
                    format!(
                        "the identity issuer does not chain to any root in {}/{} ({e}); proxies would reject its certificates",
                        self.linkerd_ns, self.names.trust_roots
                    )
                })
            }
            TrustRootsExist => self.trust_roots().await.map(|_| ()),
            TrustRootsValid => self.bundle().await.map(|_| ()),
            TrustRootsIncludeAnchor => {
                let anchor = self.anchor().await?.clone();
                let bundle = self.bundle().await?;
                if bundle.contains(anchor.fingerprint()) {
                    Ok(())
                } else {
                    Err(format!(
                        "the bundle ({} root(s)) lacks the current trust anchor {}; the operator adds it during a rotation, \
                         or re-seed with `linkerd trust bundle | kubectl apply -f -`",
                        bundle.len(),
                        trust_rotation_steps::pki::short_fingerprint(anchor.fingerprint())
                    ))
                }
            }
            NoTrustManager => {
                let api = self.dynamic(&certmanager::trust_manager_bundle(), None)?;
                match api.list(&ListParams::default()).await {
                    Err(e) if is_not_found(&e) => Ok(()), // trust-manager is not installed
                    Err(e) => Err(explain(&e, "listing trust-manager Bundles")),
                    Ok(list) => {
                        let target = &self.names.trust_roots;
                        let fighting: Vec<String> = list
                            .items
                            .iter()
                            .filter(|b| b.metadata.name.as_deref() == Some(target.as_str()))
                            .filter(|b| b.data.pointer("/spec/target/configMap").is_some())
                            .filter_map(|b| b.metadata.name.clone())
                            .collect();
                        if fighting.is_empty() {
                            Ok(())
                        } else {
                            Err(format!(
                                "trust-manager Bundle {} writes ConfigMap {target} and would overwrite the operator's \
                                 changes; delete the Bundle or let trust-manager own the bundle",
                                fighting.join(", ")
                            ))
                        }
                    }
                }
            }
            CrdInstalled => {
                let api = Api::<TrustAnchorRotation>::all(self.client()?.clone());
                match api.list_metadata(&ListParams::default().limit(1)).await {
                    Ok(_) => Ok(()),
                    Err(e) if is_not_found(&e) => Err(format!(
                        "the {} CRD is not installed: install the trust-rotation-operator-crds chart",
                        trust_rotation_crds::CRD_NAME
                    )),
                    Err(e) => Err(explain(&e, "listing TrustAnchorRotations")),
                }
            }
            OperatorAvailable => {
                let ns = self.op.namespace(&self.linkerd_ns).to_string();
                let name = &self.op.operator_deployment;
                let d = Api::<Deployment>::namespaced(self.client()?.clone(), &ns)
                    .get(name)
                    .await
                    .map_err(|e| {
                        if is_not_found(&e) {
                            self.mark_missing();
                            format!(
                                "Deployment {ns}/{name} not found: install the trust-rotation-operator chart \
                                 (or pass --operator-namespace/--operator-deployment)"
                            )
                        } else {
                            explain(&e, &format!("reading Deployment {ns}/{name}"))
                        }
                    })?;
                if deployment_available(&d) {
                    Ok(())
                } else {
                    Err(format!(
                        "Deployment {ns}/{name} is not available; see `kubectl -n {ns} describe deployment {name}`"
                    ))
                }
            }
            RotationExists => self.rotation().await.map(|_| ()),
            RotationNotBlocked => {
                let tar = self.rotation().await?;
                match tar
                    .status
                    .as_ref()
                    .and_then(|s| s.blocking_message.as_deref())
                    .filter(|m| !m.is_empty())
                {
                    None => Ok(()),
                    Some(m) => Err(format!(
                        "blocked in phase {}: {m}",
                        tar.status
                            .as_ref()
                            .and_then(|s| s.phase)
                            .map(|p| p.to_string())
                            .unwrap_or_else(|| "unknown".into())
                    )),
                }
            }
            RotationNotPaused => {
                let tar = self.rotation().await?;
                if tar.spec.paused {
                    Err(format!(
                        "TrustAnchorRotation {} is paused: the operator will not act until spec.paused is false",
                        self.op.rotation
                    ))
                } else {
                    Ok(())
                }
            }
        }
    }

    async fn anchor_certificate(&self) -> Result<DynamicObject, String> {
        self.get_dynamic(
            &certmanager::certificate(),
            Some(&self.names.cert_manager_namespace),
            &self.names.trust_anchor,
            "install the linkerd-cert-manager chart (or pass --trust-anchor)",
        )
        .await
    }
}

fn deployment_available(d: &Deployment) -> bool {
    let status = d.status.as_ref();
    let cond = status
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_.as_deref() == Some("Available")))
        .map(|c| c.status.as_deref() == Some("True"));
    let replicas = d.spec.replicas.unwrap_or(1);
    let available = status.and_then(|s| s.available_replicas).unwrap_or(0);
    cond.unwrap_or(available >= replicas) && (replicas == 0 || available >= 1)
}

fn time_valid(c: &Certificate, now: Timestamp, what: &str) -> Result<(), String> {
    if now < c.not_before() {
        Err(format!("the {what} is not valid before {}", c.not_before()))
    } else if now > c.not_after() {
        Err(format!("the {what} expired at {}", c.not_after()))
    } else {
        Ok(())
    }
}

fn expiring(c: &Certificate, now: Timestamp, within: Duration, what: &str) -> Result<(), String> {
    let left = c.not_after().as_second() - now.as_second();
    if left >= within.as_secs() as i64 {
        Ok(())
    } else {
        let days = left.max(0) / 86_400;
        Err(format!(
            "the {what} expires at {} ({days} days from now); renew it with `linkerd trust renew anchor`",
            c.not_after()
        ))
    }
}

/// Runs the checks, retrying the retryable ones until `wait` has elapsed and stopping after a
/// fatal failure. `observer` sees each final result as it is decided.
pub async fn run_checks(
    ctx: &mut Ctx,
    plan: &[Spec],
    wait: Duration,
    mut observer: impl FnMut(&CheckResult),
) -> Vec<CheckResult> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut results = Vec::new();
    for s in plan {
        let (mut res, mut missing) = ctx.run_once(s.id).await;
        let mut noticed = false;
        while s.retry && res.is_err() && !missing {
            let now = tokio::time::Instant::now();
            if now >= deadline {
                break;
            }
            if ctx.retry_notice && !noticed {
                if let Err(e) = &res {
                    eprintln!("waiting for check to complete: {}: {e}", s.description);
                }
                noticed = true;
            }
            tokio::time::sleep((deadline - now).min(Duration::from_secs(1))).await;
            (res, missing) = ctx.run_once(s.id).await;
        }
        let r = match res {
            Ok(()) => CheckResult {
                category: s.category.to_string(),
                description: s.description.clone(),
                hint: None,
                error: None,
                outcome: Outcome::Success,
            },
            Err(e) => CheckResult {
                category: s.category.to_string(),
                description: s.description.clone(),
                hint: Some(s.hint()),
                error: Some(if e.is_empty() {
                    "check failed".into()
                } else {
                    e
                }),
                outcome: if s.warning {
                    Outcome::Warning
                } else {
                    Outcome::Error
                },
            },
        };
        observer(&r);
        let stop = s.fatal && r.outcome == Outcome::Error;
        results.push(r);
        if stop {
            break;
        }
    }
    results
}
