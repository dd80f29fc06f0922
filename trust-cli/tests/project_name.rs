//! The project has one name. Cargo.toml's `workspace.package.repository` is the one place it is
//! written (the CLI's hint URLs read it through `CARGO_PKG_REPOSITORY`); everything that cannot
//! read Cargo.toml (charts, scripts, workflows, docs) must spell it the same way. A second
//! spelling (another GitHub org, another image path) fails here, naming the file and line.

use regex::Regex;
use std::path::{Path, PathBuf};
use std::process::Command;

const REPOSITORY: &str = env!("CARGO_PKG_REPOSITORY");

/// The repository's org and name, from `https://github.com/<org>/<name>`.
fn project() -> (&'static str, &'static str) {
    let path = REPOSITORY
        .strip_prefix("https://github.com/")
        .expect("workspace.package.repository is a GitHub URL");
    path.split_once('/').expect("repository is <org>/<name>")
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Every tracked file's text (git ls-files), skipping third-party copies kept verbatim.
fn tracked_texts() -> Vec<(String, String)> {
    let root = workspace_root();
    let out = Command::new("git")
        .args(["ls-files", "-z"])
        .current_dir(&root)
        .output()
        .expect("git ls-files runs");
    assert!(out.status.success(), "git ls-files failed");
    let verbatim = [
        "Cargo.lock",
        // cert-manager's own CRDs, copied as published.
        "e2e/cluster-sim/crds/",
        // The vendor's user guide, copied as published: it installs the vendor's charts.
        "docs/user-guide.md",
        // This test: its examples of wrong spellings.
        "trust-cli/tests/project_name.rs",
    ];
    String::from_utf8(out.stdout)
        .unwrap()
        .split('\0')
        .filter(|p| !p.is_empty() && !verbatim.iter().any(|v| p.starts_with(v)))
        .filter_map(|p| {
            let text = std::fs::read_to_string(root.join(p)).ok()?;
            Some((p.to_string(), text))
        })
        .collect()
}

/// Every reference to a GitHub repository or ghcr.io path that names this project (its name, or
/// its org) must use the one spelling: `github.com/<org>/<name>`, `ghcr.io/<org>/<name>` (the
/// image) or `ghcr.io/<org>/charts/` (the charts).
fn second_spellings(texts: &[(String, String)]) -> Vec<String> {
    let (org, name) = project();
    let reference =
        Regex::new(r"(github\.com|ghcr\.io)/([A-Za-z0-9_.-]+)/([A-Za-z0-9_.-]+)").unwrap();
    let mut wrong = Vec::new();
    for (path, text) in texts {
        for (n, line) in text.lines().enumerate() {
            for c in reference.captures_iter(line) {
                let (host, o, repo) = (&c[1], &c[2], &c[3]);
                let ours = repo.contains("trust-rotation")
                    || o.contains("trust")
                    || o.eq_ignore_ascii_case(org);
                // The user guide's vendor: its charts are named in comparisons, never installed.
                if !ours || o == "buoyantio" {
                    continue;
                }
                let ok = o == org && (repo == name || (host == "ghcr.io" && repo == "charts"));
                if !ok {
                    wrong.push(format!("{path}:{}: {}", n + 1, &c[0]));
                }
            }
            // A spelling of the name that an earlier chart used (neither the repository nor the CLI).
            for bad in ["linkerd-trust-rotation"] {
                if line.contains(bad) {
                    wrong.push(format!("{path}:{}: {bad}", n + 1));
                }
            }
        }
    }
    wrong
}

#[test]
fn nothing_names_the_project_a_second_way() {
    let texts = tracked_texts();
    assert!(
        texts.iter().any(|(p, _)| p == "Cargo.toml"),
        "the test reads the workspace"
    );
    let wrong = second_spellings(&texts);
    assert!(
        wrong.is_empty(),
        "the project is {REPOSITORY} (Cargo.toml); these name it another way:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn a_second_spelling_is_caught() {
    let (org, name) = project();
    let texts = vec![
        (
            "values.yaml".to_string(),
            format!("repository: ghcr.io/{org}-rotation/{name}\n"),
        ),
        (
            "README.md".to_string(),
            format!("see https://github.com/{org}/{name}-cli and github.com/linkerd-trust-rotation/x\n"),
        ),
        (
            "ok.md".to_string(),
            format!("https://github.com/{org}/{name}/releases oci://ghcr.io/{org}/charts/x https://github.com/linkerd/linkerd2\n"),
        ),
    ];
    let wrong = second_spellings(&texts);
    assert_eq!(wrong.len(), 5, "{wrong:#?}");
    assert!(wrong.iter().all(|w| !w.starts_with("ok.md")), "{wrong:#?}");
}

/// Everything that points at the operator image or the charts' home reads the same name.
#[test]
fn charts_point_at_the_released_image_and_the_repository() {
    let (org, name) = project();
    let root = workspace_root();
    let values: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(root.join("helm/trust-rotation-operator/values.yaml")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        values["image"]["repository"].as_str(),
        Some(format!("ghcr.io/{org}/{name}").as_str()),
        "the chart's default image is the one releases publish"
    );
    assert_eq!(
        values["image"]["tag"].as_str(),
        Some(""),
        "the tag follows appVersion"
    );
    for chart in [
        "trust-rotation-operator",
        "trust-rotation-operator-crds",
        "linkerd-cert-manager",
    ] {
        let meta: serde_yaml::Value = serde_yaml::from_str(
            &std::fs::read_to_string(root.join(format!("helm/{chart}/Chart.yaml"))).unwrap(),
        )
        .unwrap();
        assert_eq!(meta["home"].as_str(), Some(REPOSITORY), "{chart} home");
        assert_eq!(
            meta["sources"][0].as_str(),
            Some(REPOSITORY),
            "{chart} sources"
        );
        assert_eq!(
            meta["appVersion"].as_str(),
            Some(env!("CARGO_PKG_VERSION")),
            "{chart}'s appVersion is the workspace version (the image tag releases publish)"
        );
    }
}
