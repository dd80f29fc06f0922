//! cert-manager resources, read and written as dynamic objects (no cert-manager crate): the
//! steps crate's, shared with the operator.

pub use trust_rotation_steps::certmanager::*;
