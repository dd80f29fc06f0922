//! `linkerd trust check`: cert-manager, the Linkerd PKI it manages, the trust bundle and the
//! operator, checked the way `linkerd check` checks Linkerd, in its exact output formats.
//!
//! The checks are one table, [`CHECKS`]: each entry is a check's metadata (category,
//! description, hint anchor, warning/fatal/retry, whether it runs with `--pre`) and the one
//! function that performs it (in [`checks`]). [`plan`] picks the entries a run needs and
//! [`run_checks`] runs them in order.

mod checks;
pub mod format;

use crate::client::{explain_read, ClientArgs};
use crate::goflags::{format_go_duration, parse_duration_flag, parse_go_bool, parse_go_duration};
use crate::names::{OperatorNames, PkiNames};
use format::{CheckOutput, CheckResult, Outcome};
use jiff::Timestamp;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;
use tokio::sync::OnceCell;
use trust_rotation_crds::TrustAnchorRotation;
use trust_rotation_steps::pki::Certificate;
use trust_rotation_steps::read::{ReadError, TrustBundle};

/// Where every check's hint lives: `docs/checks.md` of this repository, one heading per anchor.
/// The repository is the workspace's `repository` (Cargo.toml), the project's one spelling.
pub const HINT_BASE: &str = concat!(env!("CARGO_PKG_REPOSITORY"), "/blob/main/docs/checks.md#");

/// How long before expiry the anchor check warns.
pub const ANCHOR_WARN_WITHIN: Duration = Duration::from_secs(60 * 86_400);

#[derive(Debug, Clone, clap::Args)]
pub struct CheckArgs {
    /// Only check the prerequisites of the operator (cert-manager, the PKI, the trust bundle)
    #[arg(long)]
    pub pre: bool,
    /// Output format: table, json or short
    #[arg(short = 'o', long, value_enum, default_value = "table")]
    pub output: CheckOutput,
    /// Retry checks that may become healthy for up to this long (Go duration, e.g. 5m0s)
    #[arg(long, default_value = "5m0s", value_parser = parse_go_duration, value_name = "DURATION")]
    pub wait: Duration,
    /// Fail (not just warn) when the trust anchor expires within this duration (e.g. 720h, 30d)
    #[arg(long, value_parser = parse_duration_flag, value_name = "DURATION")]
    pub fail_within: Option<Duration>,
    /// Accepted for `linkerd check` compatibility (namespace of data-plane checks); unused
    #[arg(short = 'n', long, value_name = "NS")]
    pub namespace: Option<String>,
    /// Accepted for `linkerd check` compatibility; unused
    #[arg(long, value_name = "ADDR")]
    pub api_addr: Option<String>,
    /// Accepted for `linkerd check` compatibility (`--proxy=false`); unused
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = parse_go_bool, value_name = "BOOL")]
    pub proxy: Option<bool>,
    /// Accepted for `linkerd check` compatibility (`--verbose=false`); unused
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = parse_go_bool, value_name = "BOOL")]
    pub verbose: Option<bool>,
    #[command(flatten)]
    pub names: PkiNames,
    #[command(flatten)]
    pub operator: OperatorNames,
}

impl CheckArgs {
    /// Parses `check` arguments alone (for tests and embedding); exits on bad input like clap.
    pub fn parse_args(args: &[&str]) -> Self {
        #[derive(clap::Parser)]
        struct Wrapper {
            #[command(flatten)]
            args: CheckArgs,
        }
        <Wrapper as clap::Parser>::parse_from(args).args
    }
}

/// The categories, in the order they run.
pub const CAT_KUBE: &str = "linkerd-trust-kubernetes-api";
pub const CAT_CERT_MANAGER: &str = "linkerd-trust-cert-manager";
pub const CAT_PKI: &str = "linkerd-trust-pki";
pub const CAT_BUNDLE: &str = "linkerd-trust-bundle";
pub const CAT_OPERATOR: &str = "linkerd-trust-operator";

/// What one run of a check concluded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    /// Failed: reported as the check's severity says; a retrying check runs again until
    /// `--wait` expires.
    Fail(String),
    /// Failed because something does not exist: reported at once, never retried (retrying
    /// a missing resource for the whole `--wait` only delays the answer, and `linkerd check`
    /// waits on us).
    Missing(String),
    /// What the check's category covers is not installed yet: a warning whatever the
    /// check's severity, and the category's remaining checks are skipped, as Linkerd's own
    /// extensions report themselves before they are installed.
    NotInstalled(String),
}

impl Verdict {
    /// `Ok` passes; an `Err` fails with its message.
    pub fn of(r: Result<(), String>) -> Self {
        match r {
            Ok(()) => Verdict::Pass,
            Err(e) => Verdict::Fail(e),
        }
    }
}

impl From<&ReadError> for Verdict {
    fn from(e: &ReadError) -> Self {
        if e.is_missing() {
            Verdict::Missing(explain_read(e))
        } else {
            Verdict::Fail(explain_read(e))
        }
    }
}

/// A check's function: looks at the cluster through the context and concludes.
pub type CheckFn = for<'a> fn(&'a Ctx) -> Pin<Box<dyn Future<Output = Verdict> + 'a>>;

/// One row of the table: a check's metadata and its function.
#[derive(Clone, Copy)]
pub struct Check {
    pub category: &'static str,
    /// A lower-case statement; `{fail_within}` is replaced by `--fail-within`'s value.
    pub description: &'static str,
    /// Heading of its section in docs/checks.md (the hint URL's fragment).
    pub anchor: &'static str,
    /// Reported as a warning (‼) when it fails; never fails the run.
    pub warning: bool,
    /// Stop running checks after this one fails.
    pub fatal: bool,
    /// Retry until `--wait` expires (unless what it needs does not exist).
    pub retry: bool,
    /// Runs with `--pre` (the operator's prerequisites).
    pub pre: bool,
    /// Runs only when `--fail-within` is given.
    pub needs_fail_within: bool,
    pub run: CheckFn,
}

impl std::fmt::Debug for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Check")
            .field("category", &self.category)
            .field("description", &self.description)
            .field("anchor", &self.anchor)
            .finish_non_exhaustive()
    }
}

/// The defaults every row starts from (an error, not fatal, not retried, runs with --pre).
const fn check(
    category: &'static str,
    description: &'static str,
    anchor: &'static str,
    run: CheckFn,
) -> Check {
    Check {
        category,
        description,
        anchor,
        warning: false,
        fatal: false,
        retry: false,
        pre: true,
        needs_fail_within: false,
        run,
    }
}

impl Check {
    const fn warning(mut self) -> Self {
        self.warning = true;
        self
    }
    const fn fatal(mut self) -> Self {
        self.fatal = true;
        self
    }
    const fn retry(mut self) -> Self {
        self.retry = true;
        self
    }
    const fn not_pre(mut self) -> Self {
        self.pre = false;
        self
    }
    const fn with_fail_within(mut self) -> Self {
        self.needs_fail_within = true;
        self
    }
}

/// Every check, in the order they run.
pub const CHECKS: &[Check] = &[
    check(
        CAT_KUBE,
        "can initialize the client",
        "ltr-k8s-api",
        checks::client_init,
    )
    .fatal(),
    check(
        CAT_KUBE,
        "can query the Kubernetes API",
        "ltr-k8s-api",
        checks::api_query,
    )
    .fatal(),
    check(
        CAT_CERT_MANAGER,
        "cert-manager CRDs are installed",
        "ltr-cert-manager-crds",
        checks::cert_manager_crds,
    )
    .fatal(),
    check(
        CAT_CERT_MANAGER,
        "cert-manager Deployments are available",
        "ltr-cert-manager-available",
        checks::cert_manager_available,
    )
    .retry(),
    check(
        CAT_PKI,
        "trust root Issuer exists and is ready",
        "ltr-root-issuer-ready",
        checks::root_issuer_ready,
    )
    .retry(),
    check(
        CAT_PKI,
        "trust anchor Certificate exists and is ready",
        "ltr-anchor-certificate-ready",
        checks::anchor_certificate_ready,
    )
    .retry(),
    check(
        CAT_PKI,
        "trust anchor Certificate uses rotationPolicy Always",
        "ltr-anchor-rotation-policy",
        checks::anchor_rotation_policy,
    )
    .warning(),
    check(
        CAT_PKI,
        "identity issuer ClusterIssuer exists and is ready",
        "ltr-cluster-issuer-ready",
        checks::cluster_issuer_ready,
    )
    .retry(),
    check(
        CAT_PKI,
        "identity issuer Certificate exists and is ready",
        "ltr-issuer-certificate-ready",
        checks::issuer_certificate_ready,
    )
    .retry(),
    check(
        CAT_PKI,
        "trust anchor is a CA certificate",
        "ltr-anchor-is-ca",
        checks::anchor_is_ca,
    ),
    check(
        CAT_PKI,
        "trust anchor is using supported crypto algorithm",
        "ltr-anchor-algorithm",
        checks::anchor_algorithm,
    ),
    check(
        CAT_PKI,
        "trust anchor is within its validity period",
        "ltr-anchor-time-valid",
        checks::anchor_time_valid,
    ),
    check(
        CAT_PKI,
        "trust anchor is valid for at least 60 days",
        "ltr-anchor-not-expiring-soon",
        checks::anchor_not_expiring_soon,
    )
    .warning(),
    check(
        CAT_PKI,
        "trust anchor is valid for at least {fail_within}",
        "ltr-anchor-fail-within",
        checks::anchor_fail_within,
    )
    .with_fail_within(),
    check(
        CAT_PKI,
        "issuer cert is using supported crypto algorithm",
        "ltr-issuer-algorithm",
        checks::issuer_algorithm,
    ),
    check(
        CAT_PKI,
        "issuer cert is within its validity period",
        "ltr-issuer-time-valid",
        checks::issuer_time_valid,
    ),
    check(
        CAT_PKI,
        "issuer cert is issued by a trust anchor in the bundle",
        "ltr-issuer-in-bundle",
        checks::issuer_in_bundle,
    ),
    check(
        CAT_BUNDLE,
        "trust roots ConfigMap exists",
        "ltr-trust-roots-exist",
        checks::trust_roots_exist,
    ),
    check(
        CAT_BUNDLE,
        "trust roots contain only valid certificates",
        "ltr-trust-roots-valid",
        checks::trust_roots_valid,
    ),
    check(
        CAT_BUNDLE,
        "trust roots include the current trust anchor",
        "ltr-trust-roots-include-anchor",
        checks::trust_roots_include_anchor,
    ),
    check(
        CAT_BUNDLE,
        "no other controller manages the trust roots",
        "ltr-trust-roots-unowned",
        checks::trust_roots_unowned,
    ),
    check(
        CAT_OPERATOR,
        "TrustAnchorRotation CRD is installed",
        "ltr-crd-installed",
        checks::crd_installed,
    )
    .fatal()
    .not_pre(),
    check(
        CAT_OPERATOR,
        "trust-rotation-operator Deployment is available",
        "ltr-operator-available",
        checks::operator_available,
    )
    .retry()
    .not_pre(),
    check(
        CAT_OPERATOR,
        "TrustAnchorRotation exists",
        "ltr-rotation-exists",
        checks::rotation_exists,
    )
    .not_pre(),
    check(
        CAT_OPERATOR,
        "trust anchor rotation is not blocked",
        "ltr-rotation-not-blocked",
        checks::rotation_not_blocked,
    )
    .not_pre(),
    check(
        CAT_OPERATOR,
        "trust anchor rotation is not paused",
        "ltr-rotation-not-paused",
        checks::rotation_not_paused,
    )
    .warning()
    .not_pre(),
];

/// One check as a run performs it: the table row with its description filled in.
#[derive(Debug, Clone)]
pub struct Spec {
    pub category: &'static str,
    pub description: String,
    pub anchor: &'static str,
    pub warning: bool,
    pub fatal: bool,
    pub retry: bool,
    check: &'static Check,
}

impl Spec {
    pub fn hint(&self) -> String {
        format!("{HINT_BASE}{}", self.anchor)
    }
}

/// The rows of [`CHECKS`] that run with these options, in order: `--pre` keeps the checks
/// marked for it, and the `--fail-within` check runs only when the flag is given.
pub fn plan(pre: bool, fail_within: Option<Duration>) -> Vec<Spec> {
    CHECKS
        .iter()
        .filter(|c| !pre || c.pre)
        .filter(|c| !c.needs_fail_within || fail_within.is_some())
        .map(|c| Spec {
            category: c.category,
            description: match fail_within {
                Some(d) => c
                    .description
                    .replace("{fail_within}", &format_go_duration(d)),
                None => c.description.to_string(),
            },
            anchor: c.anchor,
            warning: c.warning,
            fatal: c.fatal,
            retry: c.retry,
            check: c,
        })
        .collect()
}

/// What the checks share: the client, names, and resources read once (through the shared
/// read layer).
pub struct Ctx {
    client_args: ClientArgs,
    client: OnceCell<kube::Client>,
    linkerd_ns: String,
    names: PkiNames,
    op: OperatorNames,
    fail_within: Option<Duration>,
    now: Timestamp,
    anchor: OnceCell<Result<Certificate, ReadError>>,
    issuer_chain: OnceCell<Result<Vec<Certificate>, ReadError>>,
    trust_bundle: OnceCell<Result<TrustBundle, ReadError>>,
    rotation: OnceCell<Result<TrustAnchorRotation, ReadError>>,
    retry_notice: bool,
}

impl Ctx {
    pub fn new(client_args: ClientArgs, linkerd_ns: String, args: &CheckArgs) -> Self {
        Self {
            client_args,
            client: OnceCell::new(),
            linkerd_ns,
            names: args.names.clone(),
            op: args.operator.clone(),
            fail_within: args.fail_within,
            now: Timestamp::now(),
            anchor: OnceCell::new(),
            issuer_chain: OnceCell::new(),
            trust_bundle: OnceCell::new(),
            rotation: OnceCell::new(),
            retry_notice: false,
        }
    }

    /// Tell the user on stderr when a check is being retried (like Linkerd's spinner; only
    /// for people at a terminal, never in JSON mode).
    pub fn set_retry_notice(&mut self, on: bool) {
        self.retry_notice = on;
    }
}

fn result(s: &Spec, verdict: &Verdict) -> CheckResult {
    let (error, outcome) = match verdict {
        Verdict::Pass => (None, Outcome::Success),
        Verdict::Fail(e) | Verdict::Missing(e) => (
            Some(e),
            if s.warning {
                Outcome::Warning
            } else {
                Outcome::Error
            },
        ),
        Verdict::NotInstalled(e) => (Some(e), Outcome::Warning),
    };
    CheckResult {
        category: s.category.to_string(),
        description: s.description.clone(),
        // Linkerd counts a failed check without an error text as a pass: never emit one.
        error: error.map(|e| {
            if e.is_empty() {
                "check failed".to_string()
            } else {
                e.clone()
            }
        }),
        hint: (outcome != Outcome::Success).then(|| s.hint()),
        outcome,
    }
}

/// Runs the checks, retrying the retryable ones until `wait` has elapsed, stopping after a
/// fatal failure, and skipping the rest of a category whose component is not installed.
/// `observer` sees each final result as it is decided.
pub async fn run_checks(
    ctx: &mut Ctx,
    plan: &[Spec],
    wait: Duration,
    mut observer: impl FnMut(&CheckResult),
) -> Vec<CheckResult> {
    let ctx: &Ctx = ctx;
    let deadline = tokio::time::Instant::now() + wait;
    let mut results = Vec::new();
    let mut skipped_category: Option<&str> = None;
    for s in plan {
        if skipped_category == Some(s.category) {
            continue;
        }
        let mut verdict = (s.check.run)(ctx).await;
        let mut noticed = false;
        while s.retry && matches!(verdict, Verdict::Fail(_)) {
            let now = tokio::time::Instant::now();
            if now >= deadline {
                break;
            }
            if ctx.retry_notice && !noticed {
                if let Verdict::Fail(e) = &verdict {
                    eprintln!("waiting for check to complete: {}: {e}", s.description);
                }
                noticed = true;
            }
            tokio::time::sleep((deadline - now).min(Duration::from_secs(1))).await;
            verdict = (s.check.run)(ctx).await;
        }
        let r = result(s, &verdict);
        observer(&r);
        let stop = s.fatal && r.outcome == Outcome::Error;
        if matches!(verdict, Verdict::NotInstalled(_)) {
            skipped_category = Some(s.category);
        }
        results.push(r);
        if stop {
            break;
        }
    }
    results
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_check_has_its_metadata() {
        let mut seen = std::collections::BTreeSet::new();
        for c in CHECKS {
            assert!(
                [
                    CAT_KUBE,
                    CAT_CERT_MANAGER,
                    CAT_PKI,
                    CAT_BUNDLE,
                    CAT_OPERATOR
                ]
                .contains(&c.category),
                "{c:?}"
            );
            // Lower-case statements, as Linkerd's; a Kubernetes kind keeps its capitals.
            let first = c.description.split(' ').next().unwrap_or_default();
            assert!(
                first == "TrustAnchorRotation"
                    || !first.starts_with(|ch: char| ch.is_ascii_uppercase()),
                "{c:?}"
            );
            assert!(!c.description.ends_with('.'), "{c:?}");
            assert!(
                c.anchor.starts_with("ltr-") && !c.anchor.contains(' '),
                "{c:?}"
            );
            assert!(
                !(c.warning && c.fatal),
                "a warning cannot stop the run: {c:?}"
            );
            assert!(
                c.description.contains("{fail_within}") == c.needs_fail_within,
                "{c:?}"
            );
            assert!(seen.insert(c.description), "duplicate check {c:?}");
        }
        // Categories run in one block each, in the documented order.
        let mut order: Vec<&str> = CHECKS.iter().map(|c| c.category).collect();
        order.dedup();
        assert_eq!(
            order,
            [
                CAT_KUBE,
                CAT_CERT_MANAGER,
                CAT_PKI,
                CAT_BUNDLE,
                CAT_OPERATOR
            ]
        );
    }

    #[test]
    fn pre_runs_only_pre_checks_and_fail_within_only_when_asked() {
        let pre = plan(true, None);
        assert!(!pre.is_empty());
        assert!(pre.iter().all(|s| s.check.pre));
        assert_eq!(
            pre.len(),
            CHECKS
                .iter()
                .filter(|c| c.pre && !c.needs_fail_within)
                .count()
        );
        assert!(pre.iter().all(|s| s.category != CAT_OPERATOR));
        // Without --pre, everything but the --fail-within check.
        let all = plan(false, None);
        assert_eq!(all.len(), CHECKS.len() - 1);
        assert!(all.iter().any(|s| s.category == CAT_OPERATOR));
        let with = plan(true, Some(Duration::from_secs(720 * 3600)));
        let fw: Vec<&Spec> = with.iter().filter(|s| s.check.needs_fail_within).collect();
        assert_eq!(fw.len(), 1);
        assert_eq!(
            fw[0].description,
            "trust anchor is valid for at least 720h0m0s"
        );
        // The plan keeps the table's order.
        let anchors: Vec<&str> = all.iter().map(|s| s.anchor).collect();
        let table: Vec<&str> = CHECKS
            .iter()
            .filter(|c| !c.needs_fail_within)
            .map(|c| c.anchor)
            .collect();
        assert_eq!(anchors, table);
    }

    fn spec(anchor: &str) -> Spec {
        plan(false, Some(Duration::from_secs(1)))
            .into_iter()
            .find(|s| s.anchor == anchor)
            .expect("a check with that anchor")
    }

    #[test]
    fn verdicts_become_results_linkerd_counts_right() {
        let crd = spec("ltr-crd-installed");
        let r = result(&crd, &Verdict::NotInstalled("not installed yet".into()));
        assert_eq!(r.outcome, Outcome::Warning, "not installed is a warning");
        assert_eq!(r.error.as_deref(), Some("not installed yet"));
        assert_eq!(r.hint.as_deref(), Some(&*crd.hint()));
        let r = result(&crd, &Verdict::Fail(String::new()));
        assert_eq!(r.outcome, Outcome::Error);
        assert_eq!(r.error.as_deref(), Some("check failed"));
        let paused = spec("ltr-rotation-not-paused");
        assert_eq!(
            result(&paused, &Verdict::Fail("paused".into())).outcome,
            Outcome::Warning
        );
        let ok = result(&paused, &Verdict::Pass);
        assert_eq!(
            (ok.outcome, ok.hint, ok.error),
            (Outcome::Success, None, None)
        );
    }
}
