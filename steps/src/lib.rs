//! The domain of a Linkerd trust-anchor rotation: the PKI and bundle core, observation of the
//! cluster, the one implementation of "what has converged" (shared by the operator and the
//! CLI), the `Step` trait, the runner, and the rotation's steps.

#![forbid(unsafe_code)]

pub mod bundle;
pub mod certmanager;
pub mod convergence;
pub mod error;
mod intern;
pub mod metrics;
pub mod observe;
pub mod pki;
pub mod plan;
pub mod probe;
pub mod probe_cache;
pub mod read;
pub mod rotation;
pub mod runner;
pub mod schedule;
pub mod seed;
pub mod snapshot;
pub mod step;
pub mod workflow;
