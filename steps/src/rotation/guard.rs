//! Guard rails checked before every destructive write to the trust bundle.
//!
//! A bundle may never lack the root of the current identity issuer, nor the root of any live
//! workload certificate: either would break mTLS for every pod that loads it.

use crate::bundle::Bundle;
use crate::pki::{short_fingerprint, verify_chain, Certificate};

/// Refuses a bundle that would strand the issuer or any live certificate.
///
/// `live` holds `(pod, chain)` of every workload certificate the caller could read. A chain
/// that does not verify against the new bundle is named in the error.
pub fn check_bundle_write(
    new_bundle: &Bundle,
    issuer_chain: &[Certificate],
    live: &[(String, Vec<Certificate>)],
) -> Result<(), String> {
    if new_bundle.is_empty() {
        return Err("refusing to write an empty trust bundle".into());
    }
    let roots = new_bundle.certs();
    if let Err(e) = verify_chain(issuer_chain, roots, None) {
        let issuer = issuer_chain
            .first()
            .map(|c| short_fingerprint(c.fingerprint()).to_string())
            .unwrap_or_else(|| "(none)".into());
        return Err(format!(
            "refusing to write a trust bundle without the root of the current identity issuer {issuer} ({e}): \
             identity would reject its own issuer and proxies would reject every new certificate"
        ));
    }
    let stranded: Vec<&str> = live
        .iter()
        .filter(|(_, chain)| verify_chain(chain, roots, None).is_err())
        .map(|(pod, _)| pod.as_str())
        .collect();
    if !stranded.is_empty() {
        let shown: Vec<&str> = stranded.iter().take(10).copied().collect();
        return Err(format!(
            "refusing to write a trust bundle that lacks the root of {} live workload certificate(s) ({}{}): \
             those pods would fail mTLS; restart them so they get certificates from the current issuer",
            stranded.len(),
            shown.join(", "),
            if stranded.len() > shown.len() { ", …" } else { "" }
        ));
    }
    Ok(())
}

/// An expansion must keep every root the current bundle has.
pub fn check_superset(current: &Bundle, new_bundle: &Bundle) -> Result<(), String> {
    let missing: Vec<&str> = current
        .fingerprints()
        .into_iter()
        .filter(|fp| !new_bundle.contains(fp))
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "refusing to drop root(s) {} while expanding the trust bundle",
            missing
                .iter()
                .map(|f| short_fingerprint(f))
                .collect::<Vec<_>>()
                .join(", ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::testing::{issued, root};

    #[test]
    fn refuses_bundles_that_strand_the_issuer_or_a_live_cert() {
        let old = root("root");
        let new = root("root");
        let old_issuer = issued("identity", &old, true);
        let new_issuer = issued("identity", &new, true);
        let leaf_old = issued("web", &old_issuer, false);
        let leaf_new = issued("web", &new_issuer, false);
        let only_new = Bundle::from_certs([new.parsed()]);
        let both = Bundle::from_certs([old.parsed(), new.parsed()]);

        // Issuer still under the old root: the reduced bundle is refused.
        let err = check_bundle_write(&only_new, &[old_issuer.parsed()], &[]).unwrap_err();
        assert!(err.contains("identity issuer"), "{err}");
        // Issuer moved, but a pod still serves an old certificate: refused, pod named.
        let live = vec![
            (
                "app/web-1".to_string(),
                vec![leaf_new.parsed(), new_issuer.parsed()],
            ),
            (
                "app/web-2".to_string(),
                vec![leaf_old.parsed(), old_issuer.parsed()],
            ),
        ];
        let err = check_bundle_write(&only_new, &[new_issuer.parsed()], &live).unwrap_err();
        assert!(
            err.contains("app/web-2") && !err.contains("app/web-1"),
            "{err}"
        );
        // Everything under the new root: accepted.
        check_bundle_write(&only_new, &[new_issuer.parsed()], &live[..1]).unwrap();
        // The expanded bundle accepts both.
        check_bundle_write(&both, &[old_issuer.parsed()], &live).unwrap();
        assert!(check_bundle_write(&Bundle::default(), &[new_issuer.parsed()], &[]).is_err());
    }

    #[test]
    fn expansion_keeps_every_root() {
        let a = root("a").parsed();
        let b = root("b").parsed();
        let current = Bundle::from_certs([a.clone()]);
        check_superset(&current, &Bundle::from_certs([a.clone(), b.clone()])).unwrap();
        assert!(check_superset(&current, &Bundle::from_certs([b])).is_err());
    }
}
