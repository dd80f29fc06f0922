//! One vocabulary for what went wrong: a closed set of error categories with static labels
//! (the values of `trust_rotation_step_errors_total{category}`, of log fields and of the
//! messages that say "error category ..."), and the one classifier of Kubernetes client
//! errors that the operator's steps, the pod observation and the CLI all use.

use std::fmt;

/// Why something failed, as a closed set. [`ErrorCategory::label`] is the metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ErrorCategory {
    /// The API server could not be reached or the connection broke (refused, reset, DNS).
    KubeConnection,
    /// TLS with the API server could not be set up (the kubeconfig's certificate data).
    KubeTls,
    /// No usable client configuration (kubeconfig, in-cluster environment, credentials
    /// plugin).
    KubeConfig,
    /// 401: the API server rejected the credentials.
    KubeUnauthorized,
    /// 403: RBAC denies the request.
    KubeForbidden,
    /// 404: the object, or its resource type (a CRD that is not installed), does not exist.
    KubeNotFound,
    /// 409: a write conflicted with another (stale `resourceVersion`, an object that already
    /// exists).
    KubeConflict,
    /// 410: a watch or paginated list asked for a `resourceVersion` or `continue` token the
    /// server no longer has (etcd compaction). Transient: the caller relists from scratch.
    KubeGone,
    /// 400 / 422: the request was malformed or the object failed validation.
    KubeInvalid,
    /// 429: the API server (or API Priority and Fairness) throttled the request.
    KubeThrottled,
    /// 5xx other than 504: the API server failed (etcd down, webhook failing, overload).
    KubeServer,
    /// Any other 4xx answer (405, 406, 415...): the request will not be accepted as it is.
    KubeRejected,
    /// The API server's answer could not be decoded.
    KubeDecode,
    /// A client error that fits nowhere else.
    KubeOther,
    /// Something took longer than allowed: an API request (408, 504, a client-side
    /// timeout), or one execution of a step.
    Timeout,
    /// This operator replica does not hold the leadership Lease, so it makes no writes.
    NotLeader,
    /// The TrustAnchorRotation was deleted and re-created while being reconciled.
    Replaced,
    /// An object the rotation needs does not exist (the trust-anchor Secret, the identity
    /// issuer Secret, the trust-roots ConfigMap...).
    MissingResource,
    /// A Secret does not hold usable certificates (no `tls.crt`, not PEM, not X.509, not a
    /// CA...).
    InvalidCertificate,
    /// The trust-roots ConfigMap does not hold a usable PEM bundle.
    InvalidBundle,
}

impl ErrorCategory {
    /// Every category, in declaration order.
    pub const ALL: [ErrorCategory; 20] = [
        ErrorCategory::KubeConnection,
        ErrorCategory::KubeTls,
        ErrorCategory::KubeConfig,
        ErrorCategory::KubeUnauthorized,
        ErrorCategory::KubeForbidden,
        ErrorCategory::KubeNotFound,
        ErrorCategory::KubeConflict,
        ErrorCategory::KubeGone,
        ErrorCategory::KubeInvalid,
        ErrorCategory::KubeThrottled,
        ErrorCategory::KubeServer,
        ErrorCategory::KubeRejected,
        ErrorCategory::KubeDecode,
        ErrorCategory::KubeOther,
        ErrorCategory::Timeout,
        ErrorCategory::NotLeader,
        ErrorCategory::Replaced,
        ErrorCategory::MissingResource,
        ErrorCategory::InvalidCertificate,
        ErrorCategory::InvalidBundle,
    ];

    /// The static label: `trust_rotation_step_errors_total{category="<label>"}`.
    pub const fn label(self) -> &'static str {
        match self {
            ErrorCategory::KubeConnection => "kube_connection",
            ErrorCategory::KubeTls => "kube_tls",
            ErrorCategory::KubeConfig => "kube_config",
            ErrorCategory::KubeUnauthorized => "kube_unauthorized",
            ErrorCategory::KubeForbidden => "kube_forbidden",
            ErrorCategory::KubeNotFound => "kube_not_found",
            ErrorCategory::KubeConflict => "kube_conflict",
            ErrorCategory::KubeGone => "kube_gone",
            ErrorCategory::KubeInvalid => "kube_invalid",
            ErrorCategory::KubeThrottled => "kube_throttled",
            ErrorCategory::KubeServer => "kube_server",
            ErrorCategory::KubeRejected => "kube_rejected",
            ErrorCategory::KubeDecode => "kube_decode",
            ErrorCategory::KubeOther => "kube_other",
            ErrorCategory::Timeout => "timeout",
            ErrorCategory::NotLeader => "not_leader",
            ErrorCategory::Replaced => "replaced",
            ErrorCategory::MissingResource => "missing_resource",
            ErrorCategory::InvalidCertificate => "invalid_certificate",
            ErrorCategory::InvalidBundle => "invalid_bundle",
        }
    }

    /// Whether retrying the same request later may succeed without anyone changing the
    /// cluster: connection trouble, throttling, server errors, timeouts, conflicts (re-read
    /// and retry), expired list/watch positions (relist), and the operator's own leadership
    /// and replacement races. Everything else needs a person: credentials, RBAC, a missing
    /// or invalid object.
    pub const fn is_transient(self) -> bool {
        matches!(
            self,
            ErrorCategory::KubeConnection
                | ErrorCategory::KubeConflict
                | ErrorCategory::KubeGone
                | ErrorCategory::KubeThrottled
                | ErrorCategory::KubeServer
                | ErrorCategory::KubeOther
                | ErrorCategory::Timeout
                | ErrorCategory::NotLeader
                | ErrorCategory::Replaced
        )
    }

    /// The category of an HTTP status code the API server answered with.
    pub const fn of_status_code(code: u16) -> ErrorCategory {
        match code {
            400 | 422 => ErrorCategory::KubeInvalid,
            401 => ErrorCategory::KubeUnauthorized,
            403 => ErrorCategory::KubeForbidden,
            404 => ErrorCategory::KubeNotFound,
            408 | 504 => ErrorCategory::Timeout,
            409 => ErrorCategory::KubeConflict,
            410 => ErrorCategory::KubeGone,
            429 => ErrorCategory::KubeThrottled,
            500..=599 => ErrorCategory::KubeServer,
            400..=499 => ErrorCategory::KubeRejected,
            // 1xx-3xx never reach us as errors; treat them like an unexpected answer.
            _ => ErrorCategory::KubeOther,
        }
    }

    /// The one classifier of Kubernetes client errors.
    ///
    /// HTTP 410 Gone is transient (and so retried): the API server answers it only to a
    /// watch or a paginated list whose `resourceVersion` or `continue` token has been
    /// compacted away, and the remedy is to list again from the start, which is exactly what
    /// the next attempt does (a GET of a deleted object is a 404, never a 410).
    pub fn of_kube(e: &kube::Error) -> ErrorCategory {
        match e {
            kube::Error::Api(s) => ErrorCategory::of_status_code(s.code),
            kube::Error::HyperError(_) | kube::Error::Service(_) | kube::Error::ReadEvents(_) => {
                if caused_by_timeout(e) {
                    ErrorCategory::Timeout
                } else {
                    ErrorCategory::KubeConnection
                }
            }
            kube::Error::UpgradeConnection(_) => ErrorCategory::KubeConnection,
            kube::Error::RustlsTls(_) | kube::Error::TlsRequired => ErrorCategory::KubeTls,
            kube::Error::InferConfig(_)
            | kube::Error::InferKubeconfig(_)
            | kube::Error::Auth(_)
            | kube::Error::ProxyProtocolUnsupported { .. }
            | kube::Error::ProxyProtocolDisabled { .. } => ErrorCategory::KubeConfig,
            kube::Error::SerdeError(_)
            | kube::Error::FromUtf8(_)
            | kube::Error::LinesCodecMaxLineLengthExceeded => ErrorCategory::KubeDecode,
            _ => ErrorCategory::KubeOther,
        }
    }
}

/// Whether an I/O timeout is somewhere in the error's source chain (the client's connect
/// and read timeouts surface as `io::ErrorKind::TimedOut`).
fn caused_by_timeout(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::TimedOut {
                return true;
            }
        }
        cur = err.source();
    }
    false
}

impl fmt::Display for ErrorCategory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(code: u16) -> kube::Error {
        let mut s = kube::core::Status::failure("message", "Reason");
        s.code = code;
        kube::Error::Api(s.boxed())
    }

    #[test]
    fn every_http_status_class_has_one_category_and_class() {
        use ErrorCategory::*;
        let table: &[(u16, ErrorCategory, bool)] = &[
            (400, KubeInvalid, false),
            (401, KubeUnauthorized, false),
            (403, KubeForbidden, false),
            (404, KubeNotFound, false),
            (405, KubeRejected, false),
            (408, Timeout, true),
            (409, KubeConflict, true),
            (410, KubeGone, true),
            (415, KubeRejected, false),
            (422, KubeInvalid, false),
            (429, KubeThrottled, true),
            (500, KubeServer, true),
            (502, KubeServer, true),
            (503, KubeServer, true),
            (504, Timeout, true),
            (599, KubeServer, true),
            (302, KubeOther, true),
        ];
        for &(code, category, transient) in table {
            let got = ErrorCategory::of_kube(&api(code));
            assert_eq!(got, category, "HTTP {code}");
            assert_eq!(got.is_transient(), transient, "HTTP {code} ({got})");
        }
    }

    #[test]
    fn gone_is_transient_because_the_next_attempt_relists() {
        let c = ErrorCategory::of_kube(&api(410));
        assert_eq!(c.label(), "kube_gone");
        assert!(c.is_transient());
    }

    #[test]
    fn connection_errors_are_transient_and_timeouts_are_told_apart() {
        let refused = kube::Error::Service(Box::new(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "connection refused",
        )));
        assert_eq!(
            ErrorCategory::of_kube(&refused),
            ErrorCategory::KubeConnection
        );
        assert!(ErrorCategory::of_kube(&refused).is_transient());

        // A timeout wrapped in another error is still a timeout.
        #[derive(Debug, thiserror::Error)]
        #[error("connect failed: {0}")]
        struct Wrapper(#[source] std::io::Error);
        let timed_out = kube::Error::Service(Box::new(Wrapper(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "deadline has elapsed",
        ))));
        assert_eq!(ErrorCategory::of_kube(&timed_out), ErrorCategory::Timeout);
        assert!(ErrorCategory::of_kube(&timed_out).is_transient());

        let events = kube::Error::ReadEvents(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "eof",
        ));
        assert_eq!(
            ErrorCategory::of_kube(&events),
            ErrorCategory::KubeConnection
        );
    }

    #[test]
    fn configuration_tls_and_decoding_errors_need_a_person() {
        assert_eq!(
            ErrorCategory::of_kube(&kube::Error::TlsRequired),
            ErrorCategory::KubeTls
        );
        let decode =
            kube::Error::SerdeError(serde_json::from_str::<serde_json::Value>("{").unwrap_err());
        assert_eq!(ErrorCategory::of_kube(&decode), ErrorCategory::KubeDecode);
        for c in [
            ErrorCategory::KubeTls,
            ErrorCategory::KubeDecode,
            ErrorCategory::KubeConfig,
        ] {
            assert!(!c.is_transient(), "{c}");
        }
    }

    #[test]
    fn labels_are_unique_snake_case_and_all_listed() {
        let mut seen = std::collections::BTreeSet::new();
        for c in ErrorCategory::ALL {
            let l = c.label();
            assert!(
                l.chars().all(|ch| ch.is_ascii_lowercase() || ch == '_'),
                "{l}"
            );
            assert!(seen.insert(l), "duplicate label {l}");
            assert_eq!(c.to_string(), l);
        }
    }

    #[test]
    fn the_operations_guide_lists_every_category_label() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/operations.md");
        let doc = std::fs::read_to_string(path).expect("docs/operations.md");
        for c in ErrorCategory::ALL {
            assert!(
                doc.contains(&format!("`{}`", c.label())),
                "docs/operations.md does not list the error category `{c}`"
            );
        }
    }
}
