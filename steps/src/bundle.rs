//! The trust bundle: what `linkerd-identity-trust-roots` holds, how it is normalised, and how
//! the proxy injector and `linkerd check --proxy` compare it with what pods carry.

use crate::pki::{parse_pem_certificates, Certificate, PkiError};
use sha2::{Digest, Sha256};

/// An ordered set of trust roots, unique by DER.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Bundle {
    certs: Vec<Certificate>,
}

impl Bundle {
    /// Parses PEM text into a normalised bundle (see [`Bundle::from_certs`]).
    pub fn parse(pem: &str) -> Result<Self, PkiError> {
        parse_pem_certificates(pem).map(Self::from_certs)
    }

    /// Normalises certificates: duplicates (same DER) are dropped, the first occurrence keeps
    /// its place, so normalising is idempotent and never reorders distinct roots.
    pub fn from_certs(certs: impl IntoIterator<Item = Certificate>) -> Self {
        let mut out: Vec<Certificate> = Vec::new();
        for c in certs {
            if !out.iter().any(|o| o == &c) {
                out.push(c);
            }
        }
        Self { certs: out }
    }

    pub fn certs(&self) -> &[Certificate] {
        &self.certs
    }

    pub fn len(&self) -> usize {
        self.certs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.certs.is_empty()
    }

    pub fn fingerprints(&self) -> Vec<&str> {
        self.certs.iter().map(|c| c.fingerprint()).collect()
    }

    pub fn contains(&self, fingerprint: &str) -> bool {
        self.certs.iter().any(|c| c.fingerprint() == fingerprint)
    }

    /// This bundle followed by `other`'s roots that it lacks.
    pub fn union(&self, other: &Bundle) -> Bundle {
        Self::from_certs(self.certs.iter().chain(other.certs.iter()).cloned())
    }

    /// The canonical PEM text: one block per root, each ending in a newline.
    pub fn to_pem(&self) -> String {
        self.certs.iter().map(Certificate::to_pem).collect()
    }
}

/// `linkerd.io/trust-root-sha256` exactly as the proxy injector computes it: the hex SHA-256
/// of the exact bytes of the ConfigMap value (not trimmed).
pub fn trust_root_sha256(bundle_value: &str) -> String {
    hex::encode(Sha256::digest(bundle_value.as_bytes()))
}

/// The value the injector puts in `LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS`: the trimmed
/// bundle plus one newline.
pub fn injected_env_value(bundle_value: &str) -> String {
    format!("{}\n", bundle_value.trim())
}

/// The comparison `linkerd check --proxy` makes between a proxy's env and the bundle.
pub fn env_matches_bundle(env_value: &str, bundle_value: &str) -> bool {
    env_value.trim() == bundle_value.trim()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::testing::root;
    use proptest::prelude::*;
    use std::sync::OnceLock;

    fn pool() -> &'static Vec<Certificate> {
        static POOL: OnceLock<Vec<Certificate>> = OnceLock::new();
        POOL.get_or_init(|| (0..5).map(|i| root(&format!("r{i}")).parsed()).collect())
    }

    #[test]
    fn injector_hash_is_over_exact_bytes() {
        // sha256("") and sha256("a\n") are well known.
        assert_eq!(
            trust_root_sha256(""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_ne!(trust_root_sha256("x\n"), trust_root_sha256("x"));
        assert!(env_matches_bundle("x\n", "  x"));
        assert_eq!(injected_env_value("\n x \n\n"), "x\n");
    }

    #[test]
    fn union_keeps_old_first_and_dedupes() {
        let p = pool();
        let old = Bundle::from_certs([p[0].clone()]);
        let new = Bundle::from_certs([p[1].clone(), p[0].clone()]);
        let u = old.union(&new);
        assert_eq!(
            u.fingerprints(),
            vec![p[0].fingerprint(), p[1].fingerprint()]
        );
        assert_eq!(Bundle::parse(&u.to_pem()).unwrap(), u);
        assert!(u.to_pem().ends_with("-----END CERTIFICATE-----\n"));
    }

    proptest! {
        #[test]
        fn normalisation_is_idempotent_order_stable_and_lossless(idx in proptest::collection::vec(0usize..5, 0..12)) {
            let p = pool();
            let input: Vec<Certificate> = idx.iter().map(|&i| p[i].clone()).collect();
            let b = Bundle::from_certs(input.clone());
            // Idempotent, through the PEM text too.
            prop_assert_eq!(Bundle::from_certs(b.certs().to_vec()), b.clone());
            if !b.is_empty() {
                prop_assert_eq!(Bundle::parse(&b.to_pem()).unwrap(), b.clone());
            }
            // Loses no certificate, holds no duplicate.
            for c in &input {
                prop_assert!(b.contains(c.fingerprint()));
            }
            let mut fps = b.fingerprints();
            fps.sort();
            fps.dedup();
            prop_assert_eq!(fps.len(), b.len());
            // Order-stable: first occurrences keep their relative order.
            let mut firsts: Vec<&str> = Vec::new();
            for c in &input {
                if !firsts.contains(&c.fingerprint()) {
                    firsts.push(c.fingerprint());
                }
            }
            prop_assert_eq!(b.fingerprints(), firsts);
        }

        #[test]
        fn parser_never_panics(s in ".{0,400}") {
            let _ = parse_pem_certificates(&s);
        }

        #[test]
        fn parser_never_panics_on_pem_shaped_input(body in "[A-Za-z0-9+/=\n]{0,300}", label in "(CERTIFICATE|PRIVATE KEY|X)") {
            let text = format!("-----BEGIN {label}-----\n{body}\n-----END {label}-----\n");
            let _ = parse_pem_certificates(&text);
        }
    }
}
