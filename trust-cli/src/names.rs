//! Every resource name the commands touch, overridable by flags, defaulting to the user guide.

use trust_rotation_crds::defaults::*;

/// Names of the PKI resources (cert-manager side and the trust bundle).
#[derive(Debug, Clone, clap::Args)]
pub struct PkiNames {
    /// Namespace of cert-manager, the trust-root Issuer and the trust-anchor Certificate
    #[arg(long, default_value = DEFAULT_CERT_MANAGER_NAMESPACE, value_name = "NS")]
    pub cert_manager_namespace: String,
    /// The self-signed Issuer that signs the trust anchor
    #[arg(long, default_value = DEFAULT_TRUST_ROOT_ISSUER, value_name = "NAME")]
    pub trust_root_issuer: String,
    /// The trust anchor's Certificate (in --cert-manager-namespace)
    #[arg(long, default_value = DEFAULT_TRUST_ANCHOR, value_name = "NAME")]
    pub trust_anchor: String,
    /// The trust anchor's Secret (default: the Certificate's name)
    #[arg(long, value_name = "NAME")]
    pub trust_anchor_secret: Option<String>,
    /// The ClusterIssuer that signs the identity issuer
    #[arg(long, default_value = DEFAULT_IDENTITY_CLUSTER_ISSUER, value_name = "NAME")]
    pub identity_cluster_issuer: String,
    /// The identity issuer's Certificate (in the Linkerd namespace)
    #[arg(long, default_value = DEFAULT_IDENTITY_ISSUER, value_name = "NAME")]
    pub identity_issuer: String,
    /// The identity issuer's Secret (default: the Certificate's name)
    #[arg(long, value_name = "NAME")]
    pub identity_issuer_secret: Option<String>,
    /// The trust-roots ConfigMap (in the Linkerd namespace)
    #[arg(long, default_value = DEFAULT_TRUST_ROOTS, value_name = "NAME")]
    pub trust_roots: String,
    /// The key of the trust-roots ConfigMap that holds the PEM bundle
    #[arg(long, default_value = DEFAULT_TRUST_ROOTS_KEY, value_name = "KEY")]
    pub trust_roots_key: String,
}

impl Default for PkiNames {
    fn default() -> Self {
        Self {
            cert_manager_namespace: DEFAULT_CERT_MANAGER_NAMESPACE.into(),
            trust_root_issuer: DEFAULT_TRUST_ROOT_ISSUER.into(),
            trust_anchor: DEFAULT_TRUST_ANCHOR.into(),
            trust_anchor_secret: None,
            identity_cluster_issuer: DEFAULT_IDENTITY_CLUSTER_ISSUER.into(),
            identity_issuer: DEFAULT_IDENTITY_ISSUER.into(),
            identity_issuer_secret: None,
            trust_roots: DEFAULT_TRUST_ROOTS.into(),
            trust_roots_key: DEFAULT_TRUST_ROOTS_KEY.into(),
        }
    }
}

impl PkiNames {
    /// The trust anchor's Certificate and Secret, for the shared read layer.
    pub fn anchor_ref(&self) -> trust_rotation_crds::CertificateRef {
        trust_rotation_crds::CertificateRef {
            namespace: self.cert_manager_namespace.clone(),
            certificate: self.trust_anchor.clone(),
            secret: self.anchor_secret().to_string(),
        }
    }
    /// The identity issuer's Certificate and Secret (in the Linkerd namespace).
    pub fn issuer_ref(&self, linkerd_ns: &str) -> trust_rotation_crds::CertificateRef {
        trust_rotation_crds::CertificateRef {
            namespace: linkerd_ns.to_string(),
            certificate: self.identity_issuer.clone(),
            secret: self.issuer_secret().to_string(),
        }
    }
    /// The trust-roots ConfigMap and key (in the Linkerd namespace).
    pub fn roots_ref(&self, linkerd_ns: &str) -> trust_rotation_crds::ConfigMapRef {
        trust_rotation_crds::ConfigMapRef {
            namespace: linkerd_ns.to_string(),
            name: self.trust_roots.clone(),
            key: self.trust_roots_key.clone(),
        }
    }
    pub fn anchor_secret(&self) -> &str {
        self.trust_anchor_secret
            .as_deref()
            .unwrap_or(&self.trust_anchor)
    }
    pub fn issuer_secret(&self) -> &str {
        self.identity_issuer_secret
            .as_deref()
            .unwrap_or(&self.identity_issuer)
    }
}

/// Names of the operator's resources.
#[derive(Debug, Clone, clap::Args)]
pub struct OperatorNames {
    /// Namespace of the trust-rotation operator (default: the Linkerd namespace)
    #[arg(long, value_name = "NS")]
    pub operator_namespace: Option<String>,
    /// The trust-rotation operator's Deployment
    #[arg(long, default_value = "trust-rotation-operator", value_name = "NAME")]
    pub operator_deployment: String,
    /// The TrustAnchorRotation to read
    #[arg(long, default_value = DEFAULT_ROTATION_NAME, value_name = "NAME")]
    pub rotation: String,
}

impl Default for OperatorNames {
    fn default() -> Self {
        Self {
            operator_namespace: None,
            operator_deployment: "trust-rotation-operator".into(),
            rotation: DEFAULT_ROTATION_NAME.into(),
        }
    }
}

impl OperatorNames {
    pub fn namespace<'a>(&'a self, linkerd_ns: &'a str) -> &'a str {
        self.operator_namespace.as_deref().unwrap_or(linkerd_ns)
    }
}
