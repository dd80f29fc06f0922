//! X.509 certificates as a rotation sees them: parsed from PEM, identified by the SHA-256 of
//! their DER, and related to each other only by signature verification (never by comparing
//! subject names: cert-manager keeps the same CN across rotations).

use jiff::Timestamp;
use sha2::{Digest, Sha256};
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};
use trust_rotation_crds::CertificateSummary;
use x509_parser::prelude::*;

/// What went wrong reading certificates.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PkiError {
    #[error("no PEM certificate found (expected one or more -----BEGIN CERTIFICATE----- blocks)")]
    Empty,
    #[error(
        "PEM block {index} is a {label:?}, not a CERTIFICATE: a trust bundle must hold \
         certificates only (never private keys)"
    )]
    NotACertificate { index: usize, label: String },
    #[error("unexpected text {found:?} outside PEM blocks at line {line}")]
    Garbage { line: usize, found: String },
    #[error("PEM block {index} is malformed: {reason}")]
    MalformedPem { index: usize, reason: String },
    #[error("PEM block {index} is not a valid X.509 certificate: {reason}")]
    InvalidCertificate { index: usize, reason: String },
}

/// A certificate's public-key algorithm, as far as Linkerd cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyAlgorithm {
    EcdsaP256,
    EcdsaP384,
    Ecdsa(String),
    Rsa(usize),
    Ed25519,
    Other(String),
}

impl KeyAlgorithm {
    /// Linkerd's identity issuer must be ECDSA P-256.
    pub fn is_ecdsa_p256(&self) -> bool {
        matches!(self, KeyAlgorithm::EcdsaP256)
    }

    /// Algorithms Linkerd accepts for trust anchors (ECDSA P-256/P-384 and RSA ≥ 2048).
    pub fn is_supported_for_anchor(&self) -> bool {
        match self {
            KeyAlgorithm::EcdsaP256 | KeyAlgorithm::EcdsaP384 => true,
            KeyAlgorithm::Rsa(bits) => *bits >= 2048,
            _ => false,
        }
    }
}

impl fmt::Display for KeyAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyAlgorithm::EcdsaP256 => f.write_str("ECDSA P-256"),
            KeyAlgorithm::EcdsaP384 => f.write_str("ECDSA P-384"),
            KeyAlgorithm::Ecdsa(curve) => write!(f, "ECDSA {curve}"),
            KeyAlgorithm::Rsa(bits) => write!(f, "RSA {bits}"),
            KeyAlgorithm::Ed25519 => f.write_str("Ed25519"),
            KeyAlgorithm::Other(oid) => write!(f, "unknown ({oid})"),
        }
    }
}

/// One parsed certificate. Cheap to clone (clones share one parse); equality is DER equality.
///
/// Sharing matters at scale: a waiting step remembers every proxy's presented chain, and a
/// rotation copies those answers from look to look.
#[derive(Clone)]
pub struct Certificate(Arc<Parsed>);

struct Parsed {
    /// `is_signed_by`'s last answer, with the fingerprint of the issuer it was for (shared with
    /// that issuer: a remembered leaf per pod does not keep a copy).
    signed_by: Mutex<Option<(Arc<str>, bool)>>,
    body: Body,
    fingerprint: Arc<str>,
    /// Read from the DER when first asked: a waiting step remembers a leaf per pod and never
    /// asks a leaf's subject, so those do not keep one.
    subject: OnceLock<String>,
    not_before: Timestamp,
    not_after: Timestamp,
    key_algorithm: KeyAlgorithm,
    is_ca: bool,
    may_sign_certificates: bool,
}

/// What a [`Certificate`] keeps of its encoding.
enum Body {
    Der(Vec<u8>),
    /// A leaf that dropped its DER once its signature verified with `signer`'s public key
    /// ([`Certificate::vouched_by`]): a waiting step remembers one leaf per pod, and the DER
    /// was most of it. Such a leaf answers every question but [`Certificate::der`] (empty),
    /// [`Certificate::to_pem`] and [`Certificate::dns_names`] (read at probe time, before).
    Vouched {
        signer: Certificate,
    },
}

impl PartialEq for Certificate {
    /// Same fingerprint: the SHA-256 of the same DER.
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || self.0.fingerprint == other.0.fingerprint
    }
}
impl Eq for Certificate {}

impl fmt::Debug for Certificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Certificate")
            .field("subject", &self.subject())
            .field("fingerprint", &self.0.fingerprint)
            .field("not_after", &self.0.not_after)
            .finish()
    }
}

/// Lowercase hex SHA-256 of DER bytes, no colons (`openssl x509 -fingerprint -sha256`,
/// lowercased, colons removed).
pub fn fingerprint(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

/// The first 12 hex digits of a fingerprint, for people.
pub fn short_fingerprint(fp: &str) -> &str {
    fp.get(..12).unwrap_or(fp)
}

/// CA certificates parsed once and shared while anyone holds them: every proxy presents the
/// same issuer certificate after its leaf, and the bundle's roots are read on every look.
static AUTHORITIES: crate::intern::Interner<Parsed> = crate::intern::Interner::new();

impl Certificate {
    /// Parses one DER certificate. `index` is only used in the error.
    pub fn from_der(der: Vec<u8>) -> Result<Self, PkiError> {
        Self::from_der_at(der, 0)
    }

    fn from_der_at(der: Vec<u8>, index: usize) -> Result<Self, PkiError> {
        let fingerprint = fingerprint(&der);
        if let Some(shared) = AUTHORITIES.get(&fingerprint) {
            return Ok(Self(shared));
        }
        let parsed = Self::parse(der, fingerprint, index)?;
        if parsed.0.is_ca {
            AUTHORITIES.keep(&parsed.0.fingerprint, &parsed.0);
        }
        Ok(parsed)
    }

    fn parse(der: Vec<u8>, fingerprint: String, index: usize) -> Result<Self, PkiError> {
        let invalid = |reason: String| PkiError::InvalidCertificate { index, reason };
        let (rest, cert) = X509Certificate::from_der(&der).map_err(|e| invalid(e.to_string()))?;
        if !rest.is_empty() {
            return Err(invalid(format!(
                "{} trailing bytes after the certificate",
                rest.len()
            )));
        }
        let ts = |t: ASN1Time| {
            Timestamp::from_second(t.timestamp()).map_err(|e| invalid(format!("validity: {e}")))
        };
        let not_before = ts(cert.validity().not_before)?;
        let not_after = ts(cert.validity().not_after)?;
        let key_algorithm = key_algorithm(cert.public_key());
        let is_ca = cert
            .basic_constraints()
            .ok()
            .flatten()
            .map(|bc| bc.value.ca)
            .unwrap_or(false);
        // RFC 5280: without a keyUsage extension the key may be used for any purpose.
        let may_sign_certificates = match cert.key_usage() {
            Ok(Some(ku)) => ku.value.key_cert_sign(),
            Ok(None) => true,
            Err(_) => false,
        };
        Ok(Self(Arc::new(Parsed {
            fingerprint: fingerprint.into(),
            subject: OnceLock::new(),
            not_before,
            not_after,
            key_algorithm,
            is_ca,
            may_sign_certificates,
            body: Body::Der(der),
            signed_by: Mutex::new(None),
        })))
    }

    /// The DER encoding (empty for a leaf [`Certificate::vouched_by`] its issuer).
    pub fn der(&self) -> &[u8] {
        match &self.0.body {
            Body::Der(der) => der,
            Body::Vouched { .. } => &[],
        }
    }

    /// This leaf, keeping no DER, if `signer`'s public key verifies its signature (else
    /// `None`): what to remember of a proxy's answer. The copy's subject is read now; it is
    /// signed by every certificate with `signer`'s public key, as this one is.
    pub fn vouched_by(&self, signer: &Certificate) -> Option<Certificate> {
        if matches!(self.0.body, Body::Vouched { .. }) || !self.is_signed_by(signer) {
            return None;
        }
        let subject = OnceLock::new();
        let _ = subject.set(self.subject().to_string());
        Some(Self(Arc::new(Parsed {
            signed_by: Mutex::new(Some((signer.0.fingerprint.clone(), true))),
            body: Body::Vouched {
                signer: signer.clone(),
            },
            fingerprint: self.0.fingerprint.clone(),
            subject,
            not_before: self.0.not_before,
            not_after: self.0.not_after,
            key_algorithm: self.0.key_algorithm.clone(),
            is_ca: self.0.is_ca,
            may_sign_certificates: self.0.may_sign_certificates,
        })))
    }
    pub fn fingerprint(&self) -> &str {
        &self.0.fingerprint
    }
    /// The fingerprint, shared (no copy per pod that names this issuer).
    pub fn shared_fingerprint(&self) -> Arc<str> {
        self.0.fingerprint.clone()
    }
    /// The subject's distinguished name (`CN=...`).
    pub fn subject(&self) -> &str {
        self.0.subject.get_or_init(|| {
            X509Certificate::from_der(self.der())
                .map(|(_, c)| c.subject().to_string())
                .unwrap_or_default()
        })
    }
    pub fn not_before(&self) -> Timestamp {
        self.0.not_before
    }
    pub fn not_after(&self) -> Timestamp {
        self.0.not_after
    }
    pub fn key_algorithm(&self) -> &KeyAlgorithm {
        &self.0.key_algorithm
    }
    pub fn is_ca(&self) -> bool {
        self.0.is_ca
    }
    /// The DNS names of its subjectAltName (a Linkerd workload certificate's identity), read
    /// from the DER on each call.
    pub fn dns_names(&self) -> Vec<String> {
        let Ok((_, cert)) = X509Certificate::from_der(self.der()) else {
            return Vec::new();
        };
        match cert.subject_alternative_name() {
            Ok(Some(san)) => san
                .value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_string()),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        }
    }
    /// Its key may sign certificates: keyUsage has keyCertSign, or there is no keyUsage.
    pub fn may_sign_certificates(&self) -> bool {
        self.0.may_sign_certificates
    }
    /// Whether `at` lies within the validity period.
    pub fn valid_at(&self, at: Timestamp) -> bool {
        self.0.not_before <= at && at <= self.0.not_after
    }

    /// The certificate as one PEM block, ending in a newline.
    pub fn to_pem(&self) -> String {
        let block = ::pem::Pem::new("CERTIFICATE", self.der().to_vec());
        ::pem::encode_config(
            &block,
            ::pem::EncodeConfig::new().set_line_ending(::pem::LineEnding::LF),
        )
    }

    /// Whether `issuer`'s public key verifies this certificate's signature.
    ///
    /// The last answer is remembered by the issuer's fingerprint: a waiting step asks the same
    /// question of every remembered probe answer on every look, and a signature check per pod
    /// per look was most of a pass at 10,000 pods.
    pub fn is_signed_by(&self, issuer: &Certificate) -> bool {
        let mut memo = self.0.signed_by.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((fp, answer)) = memo.as_ref() {
            if Arc::ptr_eq(fp, &issuer.0.fingerprint) || *fp == issuer.0.fingerprint {
                return *answer;
            }
        }
        let answer = match &self.0.body {
            Body::Der(der) => match (
                X509Certificate::from_der(der),
                X509Certificate::from_der(issuer.der()),
            ) {
                (Ok((_, me)), Ok((_, them))) => {
                    me.verify_signature(Some(them.public_key())).is_ok()
                }
                _ => false,
            },
            // A signature that verified with `signer`'s key verifies with the same key in
            // another certificate (an issuer re-issued on its key), and with no other.
            Body::Vouched { signer } => {
                *signer == *issuer
                    || match (
                        X509Certificate::from_der(signer.der()),
                        X509Certificate::from_der(issuer.der()),
                    ) {
                        (Ok((_, a)), Ok((_, b))) => a.public_key().raw == b.public_key().raw,
                        _ => false,
                    }
            }
        };
        *memo = Some((issuer.0.fingerprint.clone(), answer));
        answer
    }

    /// The summary recorded in the TrustAnchorRotation status.
    pub fn summary(&self) -> CertificateSummary {
        CertificateSummary {
            fingerprint: self.0.fingerprint.to_string(),
            subject: Some(self.subject().to_string()),
            not_after: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                self.0.not_after,
            )),
        }
    }
}

fn key_algorithm(spki: &SubjectPublicKeyInfo<'_>) -> KeyAlgorithm {
    match spki.parsed() {
        Ok(x509_parser::public_key::PublicKey::EC(_)) => {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .map(|oid| oid.to_id_string())
                .unwrap_or_default();
            match curve.as_str() {
                "1.2.840.10045.3.1.7" => KeyAlgorithm::EcdsaP256,
                "1.3.132.0.34" => KeyAlgorithm::EcdsaP384,
                other => KeyAlgorithm::Ecdsa(other.to_string()),
            }
        }
        Ok(x509_parser::public_key::PublicKey::RSA(rsa)) => KeyAlgorithm::Rsa(rsa.key_size()),
        _ => {
            let oid = spki.algorithm.algorithm.to_id_string();
            if oid == "1.3.101.112" {
                KeyAlgorithm::Ed25519
            } else {
                KeyAlgorithm::Other(oid)
            }
        }
    }
}

const BEGIN: &str = "-----BEGIN ";
const END: &str = "-----END ";
const DASHES: &str = "-----";

/// Parses concatenated PEM certificates. Whitespace between blocks is tolerated; any other
/// text, a block that is not a `CERTIFICATE`, or a block that does not decode is an error
/// that names what was found. An input with no certificate is [`PkiError::Empty`].
pub fn parse_pem_certificates(text: &str) -> Result<Vec<Certificate>, PkiError> {
    let mut certs = Vec::new();
    let mut rest = text;
    let mut consumed_lines = 0usize;
    let mut index = 0usize;
    loop {
        let Some(start) = rest.find(BEGIN) else {
            check_blank(rest, consumed_lines)?;
            break;
        };
        check_blank(&rest[..start], consumed_lines)?;
        consumed_lines += rest[..start].matches('\n').count();
        let header = &rest[start + BEGIN.len()..];
        let Some(label_end) = header.find(DASHES) else {
            return Err(PkiError::MalformedPem {
                index,
                reason: "unterminated BEGIN line".into(),
            });
        };
        let label = header[..label_end].to_string();
        let end_marker = format!("{END}{label}{DASHES}");
        let Some(end) = rest[start..].find(&end_marker) else {
            return Err(PkiError::MalformedPem {
                index,
                reason: format!("no matching \"{end_marker}\" line"),
            });
        };
        let block_end = start + end + end_marker.len();
        let block = &rest[start..block_end];
        if label != "CERTIFICATE" {
            return Err(PkiError::NotACertificate { index, label });
        }
        let parsed = ::pem::parse(block).map_err(|e| PkiError::MalformedPem {
            index,
            reason: e.to_string(),
        })?;
        certs.push(Certificate::from_der_at(parsed.into_contents(), index)?);
        consumed_lines += block.matches('\n').count();
        rest = &rest[block_end..];
        index += 1;
    }
    if certs.is_empty() {
        return Err(PkiError::Empty);
    }
    Ok(certs)
}

/// Parses PEM that must hold at least one certificate and returns the first (a leaf or an
/// issuer's `tls.crt`, whose following certificates are its chain).
pub fn parse_pem_certificate(text: &str) -> Result<Certificate, PkiError> {
    parse_pem_certificates(text).map(|mut certs| certs.swap_remove(0))
}

fn check_blank(between: &str, line_offset: usize) -> Result<(), PkiError> {
    for (i, line) in between.lines().enumerate() {
        let t = line.trim();
        if !t.is_empty() {
            let found: String = t.chars().take(40).collect();
            return Err(PkiError::Garbage {
                line: line_offset + i + 1,
                found,
            });
        }
    }
    Ok(())
}

// === chains ===

/// Why a chain does not verify.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChainError {
    #[error("the chain is empty")]
    Empty,
    #[error("certificate {index} ({subject}) is not signed by the next certificate in the chain")]
    Broken { index: usize, subject: String },
    #[error("the chain does not lead to any of the {roots} trusted root(s)")]
    UntrustedRoot { roots: usize },
    #[error("certificate {subject} is not valid at {at} (valid {not_before} to {not_after})")]
    NotValid {
        subject: String,
        at: Timestamp,
        not_before: Timestamp,
        not_after: Timestamp,
    },
}

/// Verifies `chain` (leaf first, then intermediates) against `roots` by signatures, and
/// returns the root that anchors it. A chain whose last element is itself one of the roots
/// is accepted. When `at` is given, every certificate of the path must be valid then.
pub fn verify_chain<'r>(
    chain: &[Certificate],
    roots: &'r [Certificate],
    at: Option<Timestamp>,
) -> Result<&'r Certificate, ChainError> {
    let leaf = chain.first().ok_or(ChainError::Empty)?;
    let check_time = |c: &Certificate| match at {
        Some(t) if !c.valid_at(t) => Err(ChainError::NotValid {
            subject: c.subject().to_string(),
            at: t,
            not_before: c.0.not_before,
            not_after: c.0.not_after,
        }),
        _ => Ok(()),
    };
    // Walk up the presented chain as far as it links, trying the roots at every level, so
    // that a chain carrying its own root (or extra certificates) still verifies.
    for (i, cert) in chain.iter().enumerate() {
        check_time(cert)?;
        if let Some(root) = roots.iter().find(|r| *r == cert || cert.is_signed_by(r)) {
            check_time(root)?;
            return Ok(root);
        }
        match chain.get(i + 1) {
            Some(next) if cert.is_signed_by(next) => continue,
            Some(_) => {
                return Err(ChainError::Broken {
                    index: i,
                    subject: cert.subject().to_string(),
                })
            }
            None => break,
        }
    }
    let _ = leaf;
    Err(ChainError::UntrustedRoot { roots: roots.len() })
}

/// Which of `roots` anchor `chain` (by signatures, ignoring validity periods).
pub fn anchoring_roots<'r>(
    chain: &[Certificate],
    roots: &'r [Certificate],
) -> Vec<&'r Certificate> {
    roots
        .iter()
        .filter(|r| verify_chain(chain, std::slice::from_ref(*r), None).is_ok())
        .collect()
}

#[cfg(test)]
pub(crate) mod testing {
    //! Certificates for tests, made with rcgen.
    use super::*;
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, PKCS_ECDSA_P256_SHA256,
    };

    pub struct Ca {
        pub cert: rcgen::Certificate,
        pub key: KeyPair,
    }

    impl Ca {
        pub fn parsed(&self) -> Certificate {
            Certificate::from_der(self.cert.der().to_vec()).unwrap()
        }
        pub fn pem(&self) -> String {
            self.cert.pem()
        }
    }

    fn params(cn: &str, ca: bool) -> CertificateParams {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        if ca {
            p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        }
        p
    }

    pub fn root(cn: &str) -> Ca {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = params(cn, true).self_signed(&key).unwrap();
        Ca { cert, key }
    }

    pub fn issued(cn: &str, by: &Ca, ca: bool) -> Ca {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let issuer_params = params(by_cn(by), true);
        let issuer = rcgen::Issuer::from_params(&issuer_params, &by.key);
        let cert = params(cn, ca).signed_by(&key, &issuer).unwrap();
        Ca { cert, key }
    }

    /// A workload certificate for `identity` (its subjectAltName DNS name); `expired` makes
    /// it one that was valid in 2020 only.
    pub fn workload(identity: &str, by: &Ca, expired: bool) -> Ca {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let issuer_params = params(by_cn(by), true);
        let issuer = rcgen::Issuer::from_params(&issuer_params, &by.key);
        let mut p = CertificateParams::new(vec![identity.to_string()]).unwrap();
        if expired {
            p.not_before = rcgen::date_time_ymd(2020, 1, 1);
            p.not_after = rcgen::date_time_ymd(2020, 12, 31);
        }
        let cert = p.signed_by(&key, &issuer).unwrap();
        Ca { cert, key }
    }

    fn by_cn(_by: &Ca) -> &'static str {
        // Issuer DN is irrelevant to signature checks; same CN on purpose.
        "root.linkerd.cluster.local"
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;

    #[test]
    fn parses_and_fingerprints() {
        let r = root("root.linkerd.cluster.local");
        let certs = parse_pem_certificates(&r.pem()).unwrap();
        assert_eq!(certs.len(), 1);
        assert_eq!(certs[0].fingerprint(), fingerprint(r.cert.der()));
        assert_eq!(certs[0].fingerprint().len(), 64);
        assert!(certs[0].is_ca());
        assert!(certs[0].key_algorithm().is_ecdsa_p256());
        assert!(certs[0].subject().contains("root.linkerd.cluster.local"));
        // Round trip through our own PEM writer.
        assert_eq!(parse_pem_certificate(&certs[0].to_pem()).unwrap(), certs[0]);
    }

    #[test]
    fn an_authority_every_proxy_presents_is_held_once_and_a_leaf_is_not_shared() {
        let issuer = root("identity.linkerd.cluster.local");
        let (a, b) = (issuer.parsed(), issuer.parsed());
        assert!(Arc::ptr_eq(&a.0, &b.0), "one parse shared by both answers");
        let leaf = workload("web.emojivoto", &issuer, false);
        let (x, y) = (leaf.parsed(), leaf.parsed());
        assert_eq!(x, y);
        assert!(!Arc::ptr_eq(&x.0, &y.0), "leaves are per pod: never kept");
    }

    #[test]
    fn a_remembered_signature_answer_is_only_reused_for_the_same_issuer() {
        let (a, b) = (root("a"), root("b"));
        let leaf = workload("web.emojivoto", &a, false).parsed();
        let (a, b) = (a.parsed(), b.parsed());
        for _ in 0..2 {
            assert!(leaf.is_signed_by(&a));
            assert!(!leaf.is_signed_by(&b));
        }
    }

    #[test]
    fn a_vouched_leaf_keeps_its_answers_without_its_der() {
        let root_ca = root("root.linkerd.cluster.local");
        let issuer = issued("identity.linkerd.cluster.local", &root_ca, true);
        let other = root("identity.linkerd.cluster.local");
        let full = workload("web.emojivoto.serviceaccount", &issuer, false).parsed();
        // The same key in another certificate (an issuer re-issued on its key).
        let reissued = {
            let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
            p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            p.distinguished_name
                .push(rcgen::DnType::CommonName, "identity.linkerd.cluster.local");
            let by = rcgen::Issuer::from_params(&p, &root_ca.key);
            Certificate::from_der(p.signed_by(&issuer.key, &by).unwrap().der().to_vec()).unwrap()
        };
        let (issuer, other, root_c) = (issuer.parsed(), other.parsed(), root_ca.parsed());
        assert_ne!(reissued, issuer);

        assert!(
            full.vouched_by(&other).is_none(),
            "another key does not vouch"
        );
        let leaf = full.vouched_by(&issuer).expect("its issuer vouches");
        assert!(leaf.der().is_empty(), "the DER is what it drops");
        assert!(leaf.vouched_by(&issuer).is_none(), "vouched once");
        assert_eq!(leaf, full, "the same certificate (fingerprint)");
        assert_eq!(leaf.fingerprint(), full.fingerprint());
        assert_eq!(leaf.subject(), full.subject());
        assert_eq!(leaf.not_after(), full.not_after());
        assert!(leaf.is_signed_by(&issuer));
        assert!(
            leaf.is_signed_by(&reissued),
            "same key, another certificate"
        );
        assert!(!leaf.is_signed_by(&other));
        assert!(!leaf.is_signed_by(&root_c));
        // The chain it was presented in still verifies to the root, and only to it.
        let chain = [leaf.clone(), issuer.clone()];
        assert_eq!(
            verify_chain(&chain, std::slice::from_ref(&root_c), None),
            Ok(&root_c)
        );
        assert!(verify_chain(&chain, std::slice::from_ref(&other), None).is_err());
    }

    #[test]
    fn tolerates_whitespace_and_crlf() {
        let a = root("a");
        let b = root("b");
        let text = format!(
            "\n\n  {}\r\n\t\n{}\n\n",
            a.pem().replace('\n', "\r\n"),
            b.pem()
        );
        let certs = parse_pem_certificates(&text).unwrap();
        assert_eq!(certs.len(), 2);
    }

    #[test]
    fn refuses_private_keys_and_names_them() {
        let a = root("a");
        let text = format!("{}{}", a.pem(), a.key.serialize_pem());
        let err = parse_pem_certificates(&text).unwrap_err();
        assert_eq!(
            err,
            PkiError::NotACertificate {
                index: 1,
                label: "PRIVATE KEY".into()
            }
        );
        assert!(err.to_string().contains("PRIVATE KEY"));
    }

    #[test]
    fn refuses_garbage_with_its_line() {
        let a = root("a");
        let text = format!("{}hello world\n", a.pem());
        match parse_pem_certificates(&text).unwrap_err() {
            PkiError::Garbage { found, line } => {
                assert_eq!(found, "hello world");
                assert_eq!(line, a.pem().lines().count() + 1);
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(parse_pem_certificates("").unwrap_err(), PkiError::Empty);
        assert_eq!(
            parse_pem_certificates(" \n\t").unwrap_err(),
            PkiError::Empty
        );
        assert!(matches!(
            parse_pem_certificates("-----BEGIN CERTIFICATE-----\nAAAA\n").unwrap_err(),
            PkiError::MalformedPem { .. }
        ));
        assert!(matches!(
            parse_pem_certificates(
                "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
            )
            .unwrap_err(),
            PkiError::InvalidCertificate { .. }
        ));
        assert!(matches!(
            parse_pem_certificates(
                "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n"
            )
            .unwrap_err(),
            PkiError::MalformedPem { .. }
        ));
    }

    #[test]
    fn chains_verify_by_signature_not_by_name() {
        // Two roots with the same subject, as cert-manager produces across rotations.
        let old = root("root.linkerd.cluster.local");
        let new = root("root.linkerd.cluster.local");
        let issuer = issued("identity.linkerd.cluster.local", &new, true);
        let leaf = issued(
            "web.emojivoto.serviceaccount.identity.linkerd.cluster.local",
            &issuer,
            false,
        );
        let roots_old = [old.parsed()];
        let roots_both = [old.parsed(), new.parsed()];
        let chain = [leaf.parsed(), issuer.parsed()];

        assert!(issuer.parsed().is_signed_by(&new.parsed()));
        assert!(!issuer.parsed().is_signed_by(&old.parsed()));
        assert_eq!(
            verify_chain(&chain, &roots_old, None),
            Err(ChainError::UntrustedRoot { roots: 1 })
        );
        assert_eq!(verify_chain(&chain, &roots_both, None), Ok(&roots_both[1]));
        assert_eq!(anchoring_roots(&chain, &roots_both), vec![&roots_both[1]]);
        // The leaf alone does not reach a root; the issuer alone does.
        assert!(verify_chain(&chain[..1], &roots_both, None).is_err());
        assert!(verify_chain(&chain[1..], &roots_both, None).is_ok());
        // A chain that carries its root verifies too.
        let with_root = [leaf.parsed(), issuer.parsed(), new.parsed()];
        assert_eq!(
            verify_chain(&with_root, &roots_both, None),
            Ok(&roots_both[1])
        );
        // Broken links are named.
        let broken = [leaf.parsed(), old.parsed()];
        assert!(matches!(
            verify_chain(&broken, &roots_both, None),
            Err(ChainError::Broken { index: 0, .. })
        ));
    }

    #[test]
    fn validity_is_checked_when_asked() {
        let r = root("r");
        let c = r.parsed();
        let far = Timestamp::from_second(c.not_after().as_second() + 1).unwrap();
        assert!(verify_chain(
            std::slice::from_ref(&c),
            std::slice::from_ref(&c),
            Some(far)
        )
        .is_err());
        assert!(verify_chain(std::slice::from_ref(&c), std::slice::from_ref(&c), None).is_ok());
    }

    #[test]
    fn hostile_der_does_not_panic() {
        for len in [0usize, 1, 2, 16, 200] {
            let junk: Vec<u8> = (0..len).map(|i| (i * 37 % 251) as u8).collect();
            assert!(Certificate::from_der(junk).is_err());
        }
    }
}
