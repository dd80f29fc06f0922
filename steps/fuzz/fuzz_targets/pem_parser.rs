//! Feeds arbitrary bytes to the PEM bundle parser. Besides "never panics", checks the
//! invariants the operator relies on: whatever parses normalises to a bundle whose canonical
//! PEM parses back to the same bundle, and normalising twice changes nothing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trust_rotation_steps::bundle::Bundle;
use trust_rotation_steps::pki::parse_pem_certificates;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(certs) = parse_pem_certificates(text) else {
        return;
    };
    assert!(!certs.is_empty(), "Ok(..) must hold at least one certificate");
    let bundle = Bundle::from_certs(certs.clone());
    for c in &certs {
        assert!(bundle.contains(c.fingerprint()));
    }
    let pem = bundle.to_pem();
    let again = Bundle::parse(&pem).expect("canonical PEM parses");
    assert_eq!(again, bundle);
    assert_eq!(again.to_pem(), pem);
});
