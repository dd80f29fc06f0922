//! A Kubernetes cluster simulator on loopback: an API server that kube-rs and kubectl use
//! unchanged (`api`), backed by an in-memory object [`store`], plus the parts of a cluster a
//! Linkerd trust rotation depends on (`mesh`): cert-manager, Deployments, the Linkerd
//! injector, identity controller and proxies, and an mTLS oracle that judges them.
//!
//! It shares no code with the product crates: its certificate checks go through
//! rustls/webpki directly.

#![forbid(unsafe_code)]

pub mod store;
