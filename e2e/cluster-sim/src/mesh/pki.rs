//! Certificates for the simulation: made with rcgen, read with x509-parser, verified with
//! rustls-webpki. Nothing here is shared with the product crates on purpose: the simulator
//! judges them.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType, PKCS_ECDSA_P256_SHA256, PKCS_ECDSA_P384_SHA384,
};
use rustls_pki_types::{CertificateDer, UnixTime};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error(
        "no PEM certificate found: expected one or more \"-----BEGIN CERTIFICATE-----\" blocks"
    )]
    NoCertificate,
    #[error("invalid PEM: {0}")]
    Pem(String),
    #[error("invalid certificate: {0}")]
    Certificate(String),
    #[error("invalid private key: {0}")]
    Key(String),
    #[error("signing failed: {0}")]
    Sign(String),
    #[error("does not verify: {0}")]
    Verify(String),
}

/// Parses every `CERTIFICATE` block of a PEM text (other blocks are ignored).
pub fn parse_pem_chain(text: &str) -> Result<Vec<CertificateDer<'static>>, PkiError> {
    let blocks = pem::parse_many(text.as_bytes()).map_err(|e| PkiError::Pem(e.to_string()))?;
    let certs: Vec<_> = blocks
        .into_iter()
        .filter(|b| b.tag() == "CERTIFICATE")
        .map(|b| CertificateDer::from(b.into_contents()))
        .collect();
    if certs.is_empty() {
        return Err(PkiError::NoCertificate);
    }
    Ok(certs)
}

pub fn to_pem(der: &[u8]) -> String {
    pem::encode_config(
        &pem::Pem::new("CERTIFICATE", der.to_vec()),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}

pub fn chain_to_pem(chain: &[CertificateDer<'_>]) -> String {
    chain.iter().map(|c| to_pem(c)).collect()
}

/// What the simulation needs to know about one certificate.
#[derive(Clone, Debug)]
pub struct CertInfo {
    pub not_before: i64,
    pub not_after: i64,
    pub is_ca: bool,
    pub self_signed: bool,
}

pub fn cert_info(der: &[u8]) -> Result<CertInfo, PkiError> {
    let (_, x) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| PkiError::Certificate(e.to_string()))?;
    let is_ca = x
        .basic_constraints()
        .ok()
        .flatten()
        .is_some_and(|bc| bc.value.ca);
    let self_signed = x.subject() == x.issuer() && x.verify_signature(None).is_ok();
    Ok(CertInfo {
        not_before: x.validity().not_before.timestamp(),
        not_after: x.validity().not_after.timestamp(),
        is_ca,
        self_signed,
    })
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// A fresh ECDSA key (P-256, or P-384 when `size` is 384).
pub fn new_key(size: Option<u64>) -> Result<KeyPair, PkiError> {
    let alg = if size == Some(384) {
        &PKCS_ECDSA_P384_SHA384
    } else {
        &PKCS_ECDSA_P256_SHA256
    };
    KeyPair::generate_for(alg).map_err(|e| PkiError::Key(e.to_string()))
}

pub fn key_from_pem(pem: &str) -> Result<KeyPair, PkiError> {
    KeyPair::from_pem(pem).map_err(|e| PkiError::Key(e.to_string()))
}

fn offset(unix: i64) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp(unix).unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

pub fn unix_now() -> i64 {
    jiff::Timestamp::now().as_second()
}

/// What a certificate should look like.
pub struct Template<'a> {
    pub common_name: Option<&'a str>,
    pub dns_names: &'a [String],
    pub is_ca: bool,
    pub not_before: i64,
    pub not_after: i64,
    /// Workload certificates carry serverAuth+clientAuth.
    pub workload: bool,
}

fn params(t: &Template<'_>) -> Result<CertificateParams, PkiError> {
    let mut p = CertificateParams::default();
    if let Some(cn) = t.common_name {
        p.distinguished_name.push(DnType::CommonName, cn);
    }
    for n in t.dns_names {
        let name = n
            .clone()
            .try_into()
            .map_err(|e: rcgen::Error| PkiError::Certificate(format!("DNS name {n:?}: {e}")))?;
        p.subject_alt_names.push(SanType::DnsName(name));
    }
    p.not_before = offset(t.not_before);
    p.not_after = offset(t.not_after);
    let mut serial = [0u8; 16];
    serial.copy_from_slice(&rand::random::<[u8; 16]>());
    serial[0] &= 0x7f;
    p.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
    p.use_authority_key_identifier_extension = true;
    if t.is_ca {
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
        ];
    } else {
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
    }
    if t.workload {
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
    }
    Ok(p)
}

pub fn self_signed(t: &Template<'_>, key: &KeyPair) -> Result<CertificateDer<'static>, PkiError> {
    let p = params(t)?;
    let cert = p
        .self_signed(key)
        .map_err(|e| PkiError::Sign(e.to_string()))?;
    Ok(cert.der().clone())
}

/// Signs `t` for `subject_key` with the CA certificate `ca_der` and its key.
pub fn signed_by(
    t: &Template<'_>,
    subject_key: &impl rcgen::PublicKeyData,
    ca_der: &[u8],
    ca_key: &KeyPair,
) -> Result<CertificateDer<'static>, PkiError> {
    let p = params(t)?;
    let issuer = Issuer::from_ca_cert_der(&CertificateDer::from(ca_der.to_vec()), ca_key)
        .map_err(|e| PkiError::Certificate(e.to_string()))?;
    let cert = p
        .signed_by(subject_key, &issuer)
        .map_err(|e| PkiError::Sign(e.to_string()))?;
    Ok(cert.der().clone())
}

fn unix_time(at: i64) -> UnixTime {
    UnixTime::since_unix_epoch(Duration::from_secs(at.max(0) as u64))
}

/// Trust anchors parsed once (owned), with a stable identity for grouping.
#[derive(Debug)]
pub struct Roots {
    pub ders: Vec<CertificateDer<'static>>,
    pub anchors: Vec<rustls_pki_types::TrustAnchor<'static>>,
    /// SHA-256 over the sorted DER fingerprints: equal root sets have equal ids.
    pub id: String,
}

impl Roots {
    pub fn from_pem(text: &str) -> Result<Self, PkiError> {
        Self::from_ders(parse_pem_chain(text)?)
    }

    pub fn from_ders(ders: Vec<CertificateDer<'static>>) -> Result<Self, PkiError> {
        let mut anchors = Vec::with_capacity(ders.len());
        for d in &ders {
            let a = webpki::anchor_from_trusted_cert(d)
                .map_err(|e| PkiError::Certificate(format!("{e:?}")))?;
            anchors.push(a.to_owned());
        }
        let mut fps: Vec<String> = ders.iter().map(|d| sha256_hex(d)).collect();
        fps.sort();
        fps.dedup();
        let id = sha256_hex(fps.join(",").as_bytes());
        Ok(Self { ders, anchors, id })
    }
}

#[derive(Clone, Copy, Debug)]
pub enum Usage {
    Server,
    Client,
}

/// Whether `chain` (leaf first) verifies against `roots` at `at` for `usage`, as rustls
/// would check a peer (names are not checked).
pub fn verify(
    chain: &[CertificateDer<'_>],
    roots: &Roots,
    at: i64,
    usage: Usage,
) -> Result<(), PkiError> {
    let leaf = chain
        .first()
        .ok_or_else(|| PkiError::Verify("empty chain".into()))?;
    let ee = webpki::EndEntityCert::try_from(leaf)
        .map_err(|e| PkiError::Verify(format!("leaf: {e:?}")))?;
    let usage = match usage {
        Usage::Server => webpki::KeyUsage::server_auth(),
        Usage::Client => webpki::KeyUsage::client_auth(),
    };
    ee.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &roots.anchors,
        &chain[1..],
        unix_time(at),
        usage,
        None,
        None,
    )
    .map(|_| ())
    .map_err(|e| PkiError::Verify(format!("{e:?}")))
}

/// Whether leaves signed by this issuer (`chain` = issuer certificate first, then the rest
/// of its `tls.crt`) with `key` would verify against `roots` now: mints a throwaway leaf
/// with the issuer's key and verifies the whole chain with webpki. This also catches a
/// key that does not match the certificate.
pub fn issuer_verifies(
    chain: &[CertificateDer<'static>],
    key: &KeyPair,
    roots: &Roots,
) -> Result<(), PkiError> {
    let issuer = chain
        .first()
        .ok_or_else(|| PkiError::Verify("empty issuer chain".into()))?;
    let now = unix_now();
    let leaf_key = new_key(None)?;
    let t = Template {
        common_name: None,
        dns_names: &["probe.identity.linkerd.cluster.local".to_string()],
        is_ca: false,
        not_before: now - 60,
        not_after: now + 60,
        workload: true,
    };
    let leaf = signed_by(&t, &leaf_key, issuer, key)?;
    let mut full = vec![leaf];
    full.extend(chain.iter().cloned());
    verify(&full, roots, now, Usage::Server)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root(cn: &str) -> (CertificateDer<'static>, KeyPair) {
        let k = new_key(None).unwrap();
        let now = unix_now();
        let t = Template {
            common_name: Some(cn),
            dns_names: &[],
            is_ca: true,
            not_before: now - 10,
            not_after: now + 3600,
            workload: false,
        };
        (self_signed(&t, &k).unwrap(), k)
    }

    fn issuer(by: &(CertificateDer<'static>, KeyPair)) -> (CertificateDer<'static>, KeyPair) {
        let k = new_key(None).unwrap();
        let now = unix_now();
        let t = Template {
            common_name: Some("identity.linkerd.cluster.local"),
            dns_names: &[],
            is_ca: true,
            not_before: now - 10,
            not_after: now + 3600,
            workload: false,
        };
        (signed_by(&t, &k, &by.0, &by.1).unwrap(), k)
    }

    #[test]
    fn issuer_check_follows_the_signature_not_the_name() {
        let old = root("root.linkerd.cluster.local");
        let new = root("root.linkerd.cluster.local");
        let iss = issuer(&new);
        let only_old = Roots::from_ders(vec![old.0.clone()]).unwrap();
        let both = Roots::from_ders(vec![old.0.clone(), new.0.clone()]).unwrap();
        assert!(issuer_verifies(std::slice::from_ref(&iss.0), &iss.1, &only_old).is_err());
        assert!(issuer_verifies(std::slice::from_ref(&iss.0), &iss.1, &both).is_ok());
        // A key that does not match the certificate is refused too.
        assert!(issuer_verifies(std::slice::from_ref(&iss.0), &old.1, &both).is_err());
    }

    #[test]
    fn root_ids_ignore_order_and_duplicates() {
        let a = root("a");
        let b = root("b");
        let ab = Roots::from_ders(vec![a.0.clone(), b.0.clone()]).unwrap();
        let ba = Roots::from_ders(vec![b.0.clone(), a.0.clone(), b.0.clone()]).unwrap();
        let only_a = Roots::from_ders(vec![a.0.clone()]).unwrap();
        assert_eq!(ab.id, ba.id);
        assert_ne!(ab.id, only_a.id);
    }

    #[test]
    fn pem_round_trip_and_errors() {
        let a = root("a");
        let text = format!("{}\n{}", to_pem(&a.0), to_pem(&a.0));
        assert_eq!(parse_pem_chain(&text).unwrap().len(), 2);
        assert!(matches!(
            parse_pem_chain("hello"),
            Err(PkiError::NoCertificate)
        ));
        let info = cert_info(&a.0).unwrap();
        assert!(info.is_ca && info.self_signed);
    }
}
