//! Bad PKI input is caught before anything disruptive: the new trust anchor before the bundle
//! is expanded, the identity issuer before the control plane restarts onto it. Pure functions
//! over the parsed certificates; the steps block with their messages.

use crate::pki::{short_fingerprint, Certificate};
use jiff::Timestamp;
use trust_rotation_crds::CertificateRef;

/// How a message names a certificate: fingerprint, subject and validity period.
pub fn describe(c: &Certificate) -> String {
    format!(
        "{} ({}, valid from {} to {})",
        short_fingerprint(c.fingerprint()),
        c.subject(),
        c.not_before(),
        c.not_after()
    )
}

fn validity_problem(c: &Certificate, now: Timestamp) -> Option<String> {
    if now < c.not_before() {
        Some(format!(
            "it is not valid yet (notBefore {})",
            c.not_before()
        ))
    } else if now > c.not_after() {
        Some(format!("it expired at {}", c.not_after()))
    } else {
        None
    }
}

/// Why Linkerd cannot use `c` as a trust anchor now; empty when it can.
pub fn anchor_problems(c: &Certificate, now: Timestamp) -> Vec<String> {
    let mut out = Vec::new();
    if !c.is_ca() {
        out.push("it is not a CA certificate (basicConstraints CA:TRUE is missing)".to_string());
    }
    if !c.may_sign_certificates() {
        out.push("its keyUsage lacks keyCertSign".to_string());
    }
    out.extend(validity_problem(c, now));
    if !c.key_algorithm().is_supported_for_anchor() {
        out.push(format!(
            "its key is {}, which Linkerd does not accept for a trust anchor (ECDSA P-256 or P-384, or RSA of at \
             least 2048 bits)",
            c.key_algorithm()
        ));
    }
    out
}

/// Why Linkerd's identity controller cannot use `c` as its issuer now; empty when it can.
pub fn issuer_problems(c: &Certificate, now: Timestamp) -> Vec<String> {
    let mut out = Vec::new();
    if !c.key_algorithm().is_ecdsa_p256() {
        out.push(format!(
            "its key is {}, and Linkerd's identity issuer must be ECDSA P-256",
            c.key_algorithm()
        ));
    }
    if !c.is_ca() {
        out.push("it is not a CA certificate (basicConstraints CA:TRUE is missing)".to_string());
    }
    if !c.may_sign_certificates() {
        out.push("its keyUsage lacks keyCertSign".to_string());
    }
    out.extend(validity_problem(c, now));
    out
}

fn renew(r: &CertificateRef) -> String {
    format!("`cmctl renew -n {} {}`", r.namespace, r.certificate)
}

/// The blocking message for a new trust anchor Linkerd cannot use, `None` when it can. Nothing
/// has been changed when it is given: the bundle is not expanded with it.
pub fn anchor_block(c: &Certificate, now: Timestamp, r: &CertificateRef) -> Option<String> {
    let problems = anchor_problems(c, now);
    (!problems.is_empty()).then(|| {
        format!(
            "the new trust anchor {} in Secret {}/{} cannot be used: {}. Nothing was changed: the trust bundle is \
             not expanded with it. Fix Certificate {}/{} (isCA: true, privateKey.algorithm: ECDSA, a duration that \
             covers the rotation) and renew it ({}); the rotation then moves to the new anchor",
            describe(c),
            r.namespace,
            r.secret,
            problems.join("; "),
            r.namespace,
            r.certificate,
            renew(r)
        )
    })
}

/// The blocking message for an identity issuer Linkerd cannot use, `None` when it can. Given
/// before the control plane is restarted onto it.
pub fn issuer_block(c: &Certificate, now: Timestamp, r: &CertificateRef) -> Option<String> {
    let problems = issuer_problems(c, now);
    (!problems.is_empty()).then(|| {
        format!(
            "the identity issuer {} in Secret {}/{} cannot be used by Linkerd's identity controller: {}. The \
             control plane is not restarted onto it. Fix Certificate {}/{} (isCA: true, privateKey.algorithm: \
             ECDSA, privateKey.size: 256, signed by the trust anchor's ClusterIssuer) and renew it ({}); the \
             rotation continues once the new issuer is valid",
            describe(c),
            r.namespace,
            r.secret,
            problems.join("; "),
            r.namespace,
            r.certificate,
            renew(r)
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::testing::{issued, root};
    use jiff::ToSpan;
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose,
        PKCS_ECDSA_P384_SHA384,
    };

    fn anchor_ref() -> CertificateRef {
        CertificateRef {
            namespace: "cert-manager".into(),
            certificate: "linkerd-trust-anchor".into(),
            secret: "linkerd-trust-anchor".into(),
        }
    }

    fn issuer_ref() -> CertificateRef {
        CertificateRef {
            namespace: "linkerd".into(),
            certificate: "linkerd-identity-issuer".into(),
            secret: "linkerd-identity-issuer".into(),
        }
    }

    fn self_signed(params: CertificateParams, key: &KeyPair) -> Certificate {
        Certificate::from_der(params.self_signed(key).unwrap().der().to_vec()).unwrap()
    }

    fn params(ca: bool) -> CertificateParams {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name
            .push(DnType::CommonName, "root.linkerd.cluster.local");
        if ca {
            p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        }
        p
    }

    #[test]
    fn a_good_anchor_and_issuer_pass() {
        let now = Timestamp::now();
        let r = root("root");
        let i = issued("identity", &r, true);
        assert!(anchor_block(&r.parsed(), now, &anchor_ref()).is_none());
        assert!(issuer_block(&i.parsed(), now, &issuer_ref()).is_none());
        // A P-384 anchor is fine; as an issuer it is not.
        let key = KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384).unwrap();
        let p384 = self_signed(params(true), &key);
        assert!(anchor_problems(&p384, now).is_empty());
        assert!(issuer_problems(&p384, now)[0].contains("ECDSA P-256"));
    }

    #[test]
    fn a_non_ca_anchor_is_blocked_naming_it_and_the_fix() {
        let now = Timestamp::now();
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let leaf = self_signed(params(false), &key);
        let m = anchor_block(&leaf, now, &anchor_ref()).expect("blocked");
        assert!(m.contains("not a CA certificate"), "{m}");
        assert!(m.contains(short_fingerprint(leaf.fingerprint())), "{m}");
        assert!(m.contains("root.linkerd.cluster.local"), "{m}");
        assert!(m.contains(&leaf.not_after().to_string()), "{m}");
        assert!(
            m.contains("cmctl renew -n cert-manager linkerd-trust-anchor"),
            "{m}"
        );
        assert!(m.contains("Nothing was changed"), "{m}");
    }

    #[test]
    fn a_ca_without_key_cert_sign_is_refused() {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut p = params(true);
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let c = self_signed(p, &key);
        assert!(!c.may_sign_certificates());
        let problems = anchor_problems(&c, Timestamp::now());
        assert_eq!(problems, ["its keyUsage lacks keyCertSign"]);
        let mut p = params(true);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        assert!(self_signed(p, &key).may_sign_certificates());
    }

    #[test]
    fn expired_and_not_yet_valid_certificates_are_refused() {
        let r = root("root");
        let c = r.parsed();
        let later = c.not_after() + 1.hour();
        assert!(anchor_problems(&c, later)[0].starts_with("it expired at"));
        let earlier = c.not_before() - 1.hour();
        assert!(issuer_problems(&c, earlier)
            .iter()
            .any(|p| p.starts_with("it is not valid yet")));
    }
}
