//! The binary's contract without a cluster: extension metadata, completions, version, flag
//! parsing in linkerd check's style, and refusals of bad input.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_linkerd-trust");

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .env("KUBECONFIG", "/nonexistent/kubeconfig")
        .output()
        .expect("run linkerd-trust");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn extension_metadata_is_exactly_what_linkerd_expects() {
    let (code, stdout, _) = run(&["_extension-metadata"]);
    assert_eq!(code, 0);
    assert_eq!(
        stdout,
        "{\"name\":\"linkerd-trust\",\"checks\":\"always\"}\n"
    );
    // Hidden from help.
    let (_, help, _) = run(&["--help"]);
    assert!(!help.contains("_extension-metadata"));
    for cmd in [
        "bundle",
        "check",
        "inspect",
        "plan",
        "renew",
        "status",
        "version",
        "completions",
    ] {
        assert!(help.contains(cmd), "help lists {cmd}");
    }
}

#[test]
fn plan_help_says_how_the_last_rollout_is_derived() {
    let (code, help, _) = run(&["plan", "--help"]);
    assert_eq!(code, 0);
    for needle in [
        "-o, --output <OUTPUT>",
        "--rotation <NAME>",
        "--kubeconfig <PATH>",
        "--context <NAME>",
        "Progressing condition with reason NewReplicaSetAvailable",
        "60s when unknown",
        "AwaitPropagation, AccelerateRefresh, AwaitPropagationReduced",
    ] {
        assert!(help.contains(needle), "{needle}: {help}");
    }
}

#[test]
fn completions_and_client_version() {
    let (code, stdout, _) = run(&["completions", "bash"]);
    assert_eq!(code, 0);
    assert!(stdout.contains("linkerd-trust") && stdout.contains("inspect"));
    let (code, stdout, _) = run(&["version", "--client"]);
    assert_eq!(code, 0);
    assert_eq!(
        stdout,
        format!("Client version: {}\n", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn version_without_a_cluster_still_prints_the_client() {
    let (code, stdout, _) = run(&["version"]);
    assert_eq!(code, 0);
    assert!(stdout.starts_with("Client version: "));
    assert!(
        stdout.contains("Operator version: unavailable ("),
        "{stdout}"
    );
}

#[test]
fn go_style_flags_are_accepted_and_bad_values_refused() {
    // Everything linkerd check forwards parses (the run then fails on the missing kubeconfig,
    // reported as a check, in JSON only).
    let (code, stdout, _) = run(&[
        "check",
        "--api-addr=",
        "--context=",
        "--as=",
        "--as-group=[]",
        "--kubeconfig=/nonexistent/kubeconfig",
        "--linkerd-namespace=linkerd",
        "--verbose=false",
        "--namespace=",
        "--proxy=false",
        "--wait=5m0s",
        "--output=json",
    ]);
    assert_eq!(code, 1);
    let v: serde_json::Value = serde_json::from_str(&stdout).expect("only JSON on stdout");
    assert_eq!(v["success"], false);
    assert_eq!(v["categories"][0]["checks"][0]["result"], "error");

    for bad in [
        &["check", "--wait=5 minutes"][..],
        &["check", "--proxy=maybe"][..],
        &["check", "-o", "yaml"][..],
        &["inspect", "--concurrency", "0"][..],
        &["inspect", "--timeout", "soon"][..],
        &["inspect", "--probe", "carrier-pigeon"][..],
        &["renew", "everything"][..],
    ] {
        let (code, stdout, stderr) = run(bad);
        assert_eq!(code, 2, "{bad:?} is a usage error");
        assert!(stdout.is_empty(), "{bad:?}");
        assert!(stderr.starts_with("error: "), "{bad:?}: {stderr}");
    }
}

#[test]
fn missing_kubeconfig_is_one_line() {
    let (code, stdout, stderr) = run(&["bundle"]);
    assert_eq!(code, 1);
    assert!(stdout.is_empty());
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("Error: "), "{stderr}");
}
