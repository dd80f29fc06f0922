//! The Kubernetes client, configured the way kubectl is (`--kubeconfig`, `KUBECONFIG`,
//! `--context`, `--as`, `--as-group`, in-cluster), and the translation of client errors into
//! one sentence that says what to do.

use crate::goflags::expand_string_array;
use kube::config::{KubeConfigOptions, Kubeconfig};
use std::path::PathBuf;
use trust_rotation_steps::error::ErrorCategory;
use trust_rotation_steps::read::ReadError;

/// kubectl-style client options shared by every command.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ClientArgs {
    /// Path to the kubeconfig file (default: $KUBECONFIG, then ~/.kube/config, then in-cluster)
    #[arg(long, global = true, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,
    /// Name of the kubeconfig context to use
    #[arg(long, global = true, value_name = "NAME")]
    pub context: Option<String>,
    /// Username to impersonate for Kubernetes operations
    #[arg(long = "as", global = true, value_name = "USER")]
    pub as_user: Option<String>,
    /// Group to impersonate for Kubernetes operations (repeatable; `[]` means none)
    #[arg(long = "as-group", global = true, value_name = "GROUP")]
    pub as_group: Vec<String>,
}

impl ClientArgs {
    /// Builds a client. Fails with one sentence naming the kubeconfig problem.
    pub async fn client(&self) -> anyhow::Result<kube::Client> {
        let options = KubeConfigOptions {
            context: self.context.clone().filter(|c| !c.is_empty()),
            cluster: None,
            user: None,
        };
        let path = self
            .kubeconfig
            .clone()
            .filter(|p| !p.as_os_str().is_empty());
        let mut config = match &path {
            Some(p) => {
                let kc = Kubeconfig::read_from(p).map_err(|e| {
                    anyhow::anyhow!(
                        "cannot read kubeconfig {}: {e}; pass a readable one with --kubeconfig \
                         or KUBECONFIG",
                        p.display()
                    )
                })?;
                kube::Config::from_custom_kubeconfig(kc, &options)
                    .await
                    .map_err(|e| anyhow::anyhow!("kubeconfig {}: {e}", p.display()))?
            }
            None => match Kubeconfig::read() {
                Ok(kc) => kube::Config::from_custom_kubeconfig(kc, &options)
                    .await
                    .map_err(|e| anyhow::anyhow!("kubeconfig: {e}"))?,
                Err(read_err) => {
                    if options.context.is_some() {
                        anyhow::bail!(
                            "--context given but no kubeconfig could be read: {read_err}"
                        );
                    }
                    kube::Config::incluster().map_err(|_| {
                        anyhow::anyhow!(
                            "no Kubernetes configuration found ({read_err}); set KUBECONFIG or \
                             pass --kubeconfig"
                        )
                    })?
                }
            },
        };
        if let Some(user) = self.as_user.clone().filter(|u| !u.is_empty()) {
            config.auth_info.impersonate = Some(user);
        }
        let groups = expand_string_array(&self.as_group);
        if !groups.is_empty() {
            config.auth_info.impersonate_groups = Some(groups);
        }
        kube::Client::try_from(config)
            .map_err(|e| anyhow::anyhow!("cannot create a Kubernetes client: {e}"))
    }
}

/// Explains a client error for `what` (e.g. "reading Secret cert-manager/linkerd-trust-anchor")
/// in one line: what went wrong and what to do.
pub fn explain(e: &kube::Error, what: &str) -> String {
    match (ErrorCategory::of_kube(e), e) {
        (ErrorCategory::KubeForbidden, kube::Error::Api(s)) => format!(
            "{what}: permission denied ({}); ask a cluster admin for access or use --as/--context",
            one_line(&s.message)
        ),
        (ErrorCategory::KubeUnauthorized, _) => format!(
            "{what}: the API server rejected your credentials (401); refresh them or pick \
             another --context"
        ),
        (ErrorCategory::KubeNotFound, kube::Error::Api(s)) => {
            format!("{what}: not found ({})", one_line(&s.message))
        }
        (ErrorCategory::KubeConnection, _) => format!(
            "{what}: cannot reach the Kubernetes API server ({}); check that the cluster is \
             running and that --kubeconfig/--context point to it",
            one_line(&e.to_string())
        ),
        (ErrorCategory::KubeTls, _) => format!(
            "{what}: TLS with the API server failed ({}); check the kubeconfig's certificate data",
            one_line(&e.to_string())
        ),
        (_, kube::Error::Api(s)) => format!(
            "{what}: the API server answered {} {} ({})",
            s.code,
            s.reason,
            one_line(&s.message)
        ),
        _ => format!("{what}: {}", one_line(&e.to_string())),
    }
}

/// Explains a failed read in one line: an API failure as [`explain`] does, a missing or
/// invalid object as the read layer words it (what, and what to do).
pub fn explain_read(e: &ReadError) -> String {
    match e {
        ReadError::Api { action, source } => explain(source, action),
        other => one_line(&other.to_string()),
    }
}

/// Whether an API failure means the cluster cannot be used at all (unreachable, bad
/// credentials or TLS), so that nothing else is worth trying.
pub fn is_fatal(e: &kube::Error) -> bool {
    matches!(
        ErrorCategory::of_kube(e),
        ErrorCategory::KubeConnection
            | ErrorCategory::KubeUnauthorized
            | ErrorCategory::KubeTls
            | ErrorCategory::KubeConfig
    )
}

/// Whether the error is a 404.
pub fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(code: u16, reason: &str, message: &str) -> kube::Error {
        let mut s = kube::core::Status::failure(message, reason);
        s.code = code;
        kube::Error::Api(s.boxed())
    }

    #[tokio::test]
    async fn an_unreadable_kubeconfig_says_which_file_and_what_to_do() {
        let args = ClientArgs {
            kubeconfig: Some(PathBuf::from("/nonexistent/kubeconfig")),
            ..ClientArgs::default()
        };
        let Err(e) = args.client().await else {
            panic!("a missing kubeconfig must fail");
        };
        let e = format!("{e:#}");
        assert!(e.contains("/nonexistent/kubeconfig"), "{e}");
        assert!(
            e.contains("--kubeconfig") && e.contains("KUBECONFIG"),
            "{e}"
        );
    }

    #[test]
    fn errors_say_what_to_do_in_one_line() {
        let e = explain(
            &api(
                403,
                "Forbidden",
                "secrets \"x\" is forbidden:\n user cannot get",
            ),
            "reading Secret cert-manager/x",
        );
        assert_eq!(
            e,
            "reading Secret cert-manager/x: permission denied (secrets \"x\" is forbidden: user \
             cannot get); ask a cluster admin for access or use --as/--context"
        );
        assert!(explain(&api(401, "Unauthorized", ""), "listing pods").contains("credentials"));
        assert!(explain(&api(404, "NotFound", "nope"), "reading X").ends_with("not found (nope)"));
        assert!(is_not_found(&api(404, "NotFound", "")));
        assert!(!is_not_found(&api(403, "Forbidden", "")));
        let refused = kube::Error::Service(Box::new(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "connection refused",
        )));
        let e = explain(&refused, "listing pods");
        assert!(
            e.contains("cannot reach the Kubernetes API server") && e.contains("--kubeconfig"),
            "{e}"
        );
        assert!(!e.contains('\n'));
        let e = explain(&api(500, "InternalError", "etcd down"), "listing pods");
        assert_eq!(
            e,
            "listing pods: the API server answered 500 InternalError (etcd down)"
        );
    }
}
