//! Prints the TrustAnchorRotation CRD as YAML (`make generate` commits it).
#![forbid(unsafe_code)]

fn main() {
    print!("{}", trust_rotation_crds::crd_yaml());
}
