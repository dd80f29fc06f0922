//! The simulated cluster's PKI: a CA generated at start, a serving certificate for the
//! loopback address, a bearer token, and the kubeconfig that ties them together.

use anyhow::Context;
use base64::Engine;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

/// What a client needs to trust and authenticate to the server.
#[derive(Clone)]
pub struct Credentials {
    pub ca_pem: String,
    pub token: String,
}

/// Generates the CA and a serving certificate for `addr` (plus `localhost`), and returns the
/// rustls server configuration and the client credentials.
pub fn generate(addr: SocketAddr) -> anyhow::Result<(Arc<rustls::ServerConfig>, Credentials)> {
    let ca_key = KeyPair::generate().context("generating the CA key")?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).context("CA parameters")?;
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "cluster-sim-ca");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca_params
        .self_signed(&ca_key)
        .context("self-signing the CA")?;
    let issuer = Issuer::new(ca_params, ca_key);

    let key = KeyPair::generate().context("generating the serving key")?;
    let mut params = CertificateParams::new(vec!["localhost".to_string()])
        .context("serving certificate parameters")?;
    params
        .distinguished_name
        .push(DnType::CommonName, "kube-apiserver");
    params.subject_alt_names.push(SanType::IpAddress(addr.ip()));
    params.subject_alt_names.push(SanType::DnsName(
        "kubernetes.default.svc".try_into().context("SAN")?,
    ));
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let cert = params
        .signed_by(&key, &issuer)
        .context("signing the serving certificate")?;

    // kube-apiserver is Go: crypto/tls picks the TLS 1.3 cipher suite by its own preference,
    // AES-128-GCM first, whatever order the client offers.
    let mut provider = rustls::crypto::ring::default_provider();
    provider.cipher_suites.sort_by_key(|s| {
        use rustls::CipherSuite::*;
        match s.suite() {
            TLS13_AES_128_GCM_SHA256 => 0,
            TLS13_CHACHA20_POLY1305_SHA256 => 1,
            TLS13_AES_256_GCM_SHA384 => 2,
            _ => 3,
        }
    });
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(provider))
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(
            vec![
                CertificateDer::from(cert.der().to_vec()),
                CertificateDer::from(ca_cert.der().to_vec()),
            ],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .context("serving certificate")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.ignore_client_order = true;

    let token = {
        let bytes: [u8; 24] = rand::random();
        hex::encode(bytes)
    };
    Ok((
        Arc::new(config),
        Credentials {
            ca_pem: ca_cert.pem(),
            token,
        },
    ))
}

/// The kubeconfig YAML for a server at `addr` (context, cluster and user named `cluster-sim`).
pub fn kubeconfig_yaml(addr: SocketAddr, creds: &Credentials) -> String {
    let ca = base64::engine::general_purpose::STANDARD.encode(creds.ca_pem.as_bytes());
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: cluster-sim\n  cluster:\n    server: https://{addr}\n    certificate-authority-data: {ca}\ncontexts:\n- name: cluster-sim\n  context:\n    cluster: cluster-sim\n    user: cluster-sim\n    namespace: default\ncurrent-context: cluster-sim\nusers:\n- name: cluster-sim\n  user:\n    token: {token}\npreferences: {{}}\n",
        token = creds.token
    )
}

/// Writes `contents` to `path` atomically: a temporary file in the same directory, then a
/// rename, so a reader never sees a partial kubeconfig. The file is private to the user.
pub fn write_atomically(path: &Path, contents: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let file_name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("kubeconfig");
    let tmp = dir.join(format!(".{file_name}.{}.tmp", std::process::id()));
    {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts
            .open(&tmp)
            .with_context(|| format!("creating {}", tmp.display()))?;
        f.write_all(contents.as_bytes())
            .with_context(|| format!("writing {}", tmp.display()))?;
        f.sync_all().ok();
    }
    std::fs::rename(&tmp, path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
    Ok(())
}
