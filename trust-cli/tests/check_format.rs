//! `linkerd trust check` output, byte for byte against Linkerd's formats
//! (`pkg/healthcheck/healthcheck_output.go` and its goldens), and parsed back the way
//! `linkerd check` parses an extension's JSON.

use linkerd_trust::check::format::*;
use linkerd_trust::check::{plan, run_checks, CheckArgs, Ctx};
use linkerd_trust::client::ClientArgs;
use std::time::Duration;

fn golden(name: &str) -> String {
    let path = format!("{}/tests/golden/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn ok(cat: &str, d: &str) -> CheckResult {
    CheckResult {
        category: cat.into(),
        description: d.into(),
        hint: None,
        error: None,
        outcome: Outcome::Success,
    }
}

fn bad(cat: &str, d: &str, err: &str, hint: &str, outcome: Outcome) -> CheckResult {
    CheckResult {
        category: cat.into(),
        description: d.into(),
        hint: Some(hint.into()),
        error: Some(err.into()),
        outcome,
    }
}

fn reference() -> Vec<CheckResult> {
    vec![
        ok("category", "check1"),
        bad(
            "category",
            "check2",
            "This should contain instructions for fail",
            "https://linkerd.io/2/checks/#hint-anchor",
            Outcome::Error,
        ),
    ]
}

fn mixed() -> Vec<CheckResult> {
    vec![
        ok(
            "linkerd-trust-cert-manager",
            "cert-manager CRDs are installed",
        ),
        bad(
            "linkerd-trust-cert-manager",
            "cert-manager Deployments are available",
            "not available in cert-manager: cert-manager-webhook",
            "https://example.test/checks.md#w",
            Outcome::Warning,
        ),
        ok("linkerd-trust-pki", "trust anchor is a CA certificate"),
        bad(
            "linkerd-trust-pki",
            "trust anchor is within its validity period",
            "the trust anchor expired at <2020-01-01> & is gone",
            "https://example.test/checks.md#e",
            Outcome::Error,
        ),
    ]
}

const PLAIN: Symbols = Symbols { color: false };

#[test]
fn reference_example_table_and_json() {
    assert_eq!(
        render_table(&reference(), PLAIN),
        golden("reference_table.golden")
    );
    assert_eq!(render_json(&reference()), golden("reference_json.golden"));
}

#[test]
fn mixed_categories_warnings_and_go_html_escaping() {
    assert_eq!(render_table(&mixed(), PLAIN), golden("mixed_table.golden"));
    assert_eq!(render_short(&mixed(), PLAIN), golden("mixed_short.golden"));
    assert_eq!(render_json(&mixed()), golden("mixed_json.golden"));
}

#[test]
fn short_format_edge_cases_follow_linkerd() {
    // All green: only the status line.
    let green = vec![ok("a", "x"), ok("b", "y")];
    assert_eq!(render_short(&green, PLAIN), "Status check results are √\n");
    assert_eq!(
        render_table(&green, PLAIN),
        "a\n-\n√ x\n\nb\n-\n√ y\n\nStatus check results are √\n"
    );
    // Warnings alone still end in √, after a blank line.
    let warned = vec![
        ok("a", "x"),
        bad("a", "w", "why", "https://h/#w", Outcome::Warning),
    ];
    assert_eq!(
        render_short(&warned, PLAIN),
        "a\n-\n‼ w\n    why\n    see https://h/#w for hints\n\nStatus check results are √\n"
    );
    // Errors without warnings: Linkerd prints no blank line before the status in short mode.
    let failed = vec![bad("a", "e", "why", "https://h/#e", Outcome::Error)];
    assert_eq!(
        render_short(&failed, PLAIN),
        "a\n-\n× e\n    why\n    see https://h/#e for hints\nStatus check results are ×\n"
    );
    // No hint: no "see" line.
    let mut nohint = failed.clone();
    nohint[0].hint = None;
    assert_eq!(
        render_table(&nohint, PLAIN),
        "a\n-\n× e\n    why\n\nStatus check results are ×\n"
    );
}

#[test]
fn colours_only_when_asked() {
    let sym = Symbols { color: true };
    let text = render_table(&reference(), sym);
    assert!(text.contains("\x1b[32;1m√\x1b[0m check1"));
    assert!(text.contains("\x1b[31;1m×\x1b[0m check2"));
    assert!(text.ends_with("Status check results are \x1b[31;1m×\x1b[0m\n"));
    assert!(!render_table(&reference(), PLAIN).contains('\x1b'));
}

#[test]
fn json_round_trips_through_linkerds_rules() {
    let (parsed, success) = parse_like_linkerd(&render_json(&mixed())).unwrap();
    assert!(!success);
    assert_eq!(parsed, mixed());
    let (_, success) = parse_like_linkerd(&render_json(&mixed()[..3])).unwrap();
    assert!(success, "a warning alone does not fail linkerd check");
    // Non-JSON is what linkerd check reports as invalid extension output.
    assert!(parse_like_linkerd("Status check results are √\n").is_err());
}

#[test]
fn linkerd_ignores_failures_without_error_text_so_we_never_emit_them() {
    // What linkerd check would do with an empty error: count it as a pass.
    let sneaky = r#"{"success":false,"categories":[{"categoryName":"c","checks":[{"description":"d","result":"error"}]}]}"#;
    let (_, success) = parse_like_linkerd(sneaky).unwrap();
    assert!(success);
    // Our runner: every failure carries an error and a hint, whatever went wrong.
    let args = CheckArgs::parse_args(&["check", "--wait=0s"]);
    let client = ClientArgs {
        kubeconfig: Some("/nonexistent/kubeconfig".into()),
        ..Default::default()
    };
    let mut ctx = Ctx::new(client, "linkerd".into(), &args);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let results = rt.block_on(run_checks(
        &mut ctx,
        &plan(false, None),
        Duration::ZERO,
        |_| {},
    ));
    assert_eq!(results.len(), 1, "client init is fatal: {results:?}");
    let json = render_json(&results);
    let (parsed, success) = parse_like_linkerd(&json).unwrap();
    assert!(!success);
    assert_eq!(parsed[0].outcome, Outcome::Error);
    assert!(parsed[0]
        .error
        .as_deref()
        .unwrap()
        .contains("/nonexistent/kubeconfig"));
    assert!(parsed[0].hint.as_deref().unwrap().starts_with("https://"));
}

#[test]
fn every_hint_anchor_is_documented() {
    let docs = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/checks.md"))
        .expect("docs/checks.md exists");
    let headings: Vec<&str> = docs
        .lines()
        .filter_map(|l| l.strip_prefix("### "))
        .map(str::trim)
        .collect();
    for s in plan(false, Some(Duration::from_secs(86_400))) {
        assert!(
            headings.contains(&s.anchor),
            "docs/checks.md lacks a `### {}` heading for {:?}",
            s.anchor,
            s.description
        );
        assert!(s.hint().starts_with(linkerd_trust::check::HINT_BASE));
    }
    // --pre drops exactly the operator category.
    let pre = plan(true, None);
    assert!(pre
        .iter()
        .all(|s| s.category != linkerd_trust::check::CAT_OPERATOR));
    assert!(plan(false, None)
        .iter()
        .any(|s| s.category == linkerd_trust::check::CAT_OPERATOR));
}
