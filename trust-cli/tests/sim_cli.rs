//! `linkerd-trust` end to end against the cluster simulator's demo topology (cert-manager,
//! the guide's PKI, the Linkerd control plane and emojivoto), through the real binary and a
//! real kubeconfig, as a user would run it.

use cluster_sim::mesh::{Durations, Topology};
use cluster_sim::{FaultConfig, Sim, SimConfig};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::CustomResourceExt;
use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;
use trust_rotation_crds::TrustAnchorRotation;

const BIN: &str = env!("CARGO_BIN_EXE_linkerd-trust");

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

async fn cli(kubeconfig: &Path, args: &[&str]) -> Out {
    let out = tokio::process::Command::new(BIN)
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .env_remove("NO_COLOR")
        .output()
        .await
        .expect("run linkerd-trust");
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

async fn demo(durations: Durations) -> Sim {
    Sim::start(SimConfig {
        topology: Topology::Demo,
        durations,
        ..SimConfig::default()
    })
    .await
    .expect("the demo simulator starts")
}

fn deployment(ns: &str, name: &str, labels: Value) -> Deployment {
    serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "main", "image": format!("example.test/{name}:v1.16.0")}]}
            }
        }
    }))
    .expect("valid Deployment")
}

async fn wait_available(client: &kube::Client, ns: &str, names: &[&str]) {
    let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
    for _ in 0..200 {
        let mut all = true;
        for n in names {
            let ok = api
                .get(n)
                .await
                .ok()
                .and_then(|d| d.status)
                .is_some_and(|s| s.available_replicas.unwrap_or(0) >= 1);
            all &= ok;
        }
        if all {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("Deployments {names:?} in {ns} never became available");
}

const CERT_MANAGER_DEPLOYMENTS: [&str; 3] = [
    "cert-manager",
    "cert-manager-cainjector",
    "cert-manager-webhook",
];

/// cert-manager's own Deployments, as a real installation has them (created when missing).
async fn install_cert_manager_deployments(client: &kube::Client) {
    let api: Api<Deployment> = Api::namespaced(client.clone(), "cert-manager");
    for n in CERT_MANAGER_DEPLOYMENTS {
        match api
            .create(
                &PostParams::default(),
                &deployment(
                    "cert-manager",
                    n,
                    json!({"app.kubernetes.io/instance": "cert-manager"}),
                ),
            )
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => panic!("create cert-manager Deployment {n}: {e}"),
        }
    }
    wait_available(client, "cert-manager", &CERT_MANAGER_DEPLOYMENTS).await;
}

/// Removes cert-manager's Deployments (the simulated controller keeps issuing regardless).
async fn remove_cert_manager_deployments(client: &kube::Client) {
    let api: Api<Deployment> = Api::namespaced(client.clone(), "cert-manager");
    let all = api
        .list(&Default::default())
        .await
        .expect("list Deployments");
    for d in all.items {
        let name = d.metadata.name.unwrap_or_default();
        api.delete(&name, &DeleteParams::default())
            .await
            .expect("delete Deployment");
    }
}

/// The operator charts' footprint (CRD, the `cluster` TrustAnchorRotation, the Deployment),
/// without running the operator itself.
async fn install_operator_footprint(client: &kube::Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.create(&PostParams::default(), &TrustAnchorRotation::crd())
        .await
        .expect("create CRD");
    let tars: Api<TrustAnchorRotation> = Api::all(client.clone());
    let tar: TrustAnchorRotation = serde_json::from_value(json!({
        "apiVersion": "trust.linkerd.io/v1alpha1", "kind": "TrustAnchorRotation",
        "metadata": {"name": "cluster"}, "spec": {}
    }))
    .expect("valid TrustAnchorRotation");
    let mut created = false;
    for _ in 0..100 {
        // The CRD is served shortly after it is created.
        if tars.create(&PostParams::default(), &tar).await.is_ok() {
            created = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(created, "TrustAnchorRotation cluster could not be created");
    let api: Api<Deployment> = Api::namespaced(client.clone(), "linkerd");
    api.create(
        &PostParams::default(),
        &deployment(
            "linkerd",
            "trust-rotation-operator",
            json!({"app.kubernetes.io/name": "trust-rotation-operator", "app.kubernetes.io/version": "0.1.0"}),
        ),
    )
    .await
    .expect("create operator Deployment");
    wait_available(client, "linkerd", &["trust-rotation-operator"]).await;
}

async fn trust_roots(client: &kube::Client) -> String {
    let cm = Api::<ConfigMap>::namespaced(client.clone(), "linkerd")
        .get("linkerd-identity-trust-roots")
        .await
        .expect("trust roots");
    cm.data
        .and_then(|mut d| d.remove("ca-bundle.crt"))
        .unwrap_or_default()
}

async fn set_trust_roots(client: &kube::Client, value: &str) {
    Api::<ConfigMap>::namespaced(client.clone(), "linkerd")
        .patch(
            "linkerd-identity-trust-roots",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"ca-bundle.crt": value}})),
        )
        .await
        .expect("patch trust roots");
}

async fn secret_crt(client: &kube::Client, ns: &str, name: &str) -> String {
    let s = Api::<Secret>::namespaced(client.clone(), ns)
        .get(name)
        .await
        .expect("secret");
    let b = s.data.expect("data").remove("tls.crt").expect("tls.crt");
    String::from_utf8(b.0).expect("PEM")
}

fn check_line<'a>(stdout: &'a str, description: &str) -> &'a str {
    stdout
        .lines()
        .find(|l| l.ends_with(description) && l.len() <= description.len() + 5)
        .unwrap_or_else(|| panic!("no check {description:?} in:\n{stdout}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bundle_apply_then_check_pre_and_full_check_are_green() {
    let sim = demo(Durations::fast()).await;
    let client = sim.client();
    let kc = sim.kubeconfig_path().to_path_buf();
    let anchor = secret_crt(&client, "cert-manager", "linkerd-trust-anchor").await;

    // A clobbered bundle is restored by `linkerd trust bundle | kubectl apply -f -`.
    set_trust_roots(&client, "stale\n").await;
    let out = cli(&kc, &["bundle"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.starts_with("apiVersion: v1\nkind: ConfigMap\n"),
        "{}",
        out.stdout
    );
    let json_out = cli(&kc, &["bundle", "-o", "json"]).await;
    let v: Value = serde_json::from_str(&json_out.stdout).expect("bundle -o json is JSON");
    assert_eq!(v["metadata"]["name"], "linkerd-identity-trust-roots");
    assert_eq!(v["data"]["ca-bundle.crt"].as_str(), Some(anchor.as_str()));
    let applied = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("{BIN} bundle | kubectl apply -f -"))
        .env("KUBECONFIG", &kc)
        .output();
    match applied {
        Ok(o) if o.status.success() => {
            assert_eq!(
                trust_roots(&client).await,
                anchor,
                "the bundle is the anchor's tls.crt"
            );
        }
        Ok(o) => panic!(
            "bundle | kubectl apply failed: {}",
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => panic!("cannot run sh: {e}"),
    }

    // Prerequisites: red while cert-manager's Deployments are missing, then green.
    remove_cert_manager_deployments(&client).await;
    let out = cli(&kc, &["check", "--pre", "--wait=0s"]).await;
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert!(check_line(&out.stdout, "cert-manager Deployments are available").starts_with('×'));
    assert!(
        out.stdout
            .contains("no Deployments in namespace cert-manager"),
        "{}",
        out.stdout
    );
    install_cert_manager_deployments(&client).await;
    let out = cli(&kc, &["check", "--pre", "--wait=10s"]).await;
    assert_eq!(out.code, 0, "{}", out.stdout);
    assert!(
        out.stdout.ends_with("\nStatus check results are √\n"),
        "{}",
        out.stdout
    );
    assert!(!out.stdout.contains('×') && !out.stdout.contains("linkerd-trust-operator"));

    // Before the operator is installed, the full check warns at the operator category (the
    // CRD is missing: the operator is not installed yet) and does not fail...
    let out = cli(&kc, &["check", "--wait=0s", "-o", "json"]).await;
    assert_eq!(out.code, 0, "{}", out.stdout);
    let (results, success) = linkerd_trust::check::format::parse_like_linkerd(&out.stdout)
        .expect("check -o json is what linkerd check expects");
    assert!(success);
    let last = results.last().expect("results");
    assert_eq!(last.description, "TrustAnchorRotation CRD is installed");
    assert_eq!(last.outcome, linkerd_trust::check::format::Outcome::Warning);
    assert!(last
        .error
        .as_deref()
        .unwrap_or_default()
        .contains("trust-rotation-operator-crds"));

    // ...and green once the operator is installed, with linkerd check's forwarded flags.
    install_operator_footprint(&client).await;
    let out = cli(
        &kc,
        &[
            "check",
            "--as-group=[]",
            "--proxy=false",
            "--verbose=false",
            "--wait=10s",
            "--linkerd-namespace=linkerd",
            "--namespace=",
            "--output=json",
        ],
    )
    .await;
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let (results, success) = linkerd_trust::check::format::parse_like_linkerd(&out.stdout).unwrap();
    assert!(success, "{}", out.stdout);
    assert!(results
        .iter()
        .any(|r| r.description == "trust anchor rotation is not blocked"));
    let out = cli(&kc, &["check", "-o", "short", "--wait=5s"]).await;
    assert_eq!(out.stdout, "Status check results are √\n");

    // version reads the operator's Deployment.
    let out = cli(&kc, &["version"]).await;
    assert_eq!(
        out.stdout,
        format!(
            "Client version: {}\nOperator version: 0.1.0\n",
            env!("CARGO_PKG_VERSION")
        )
    );
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_is_red_with_the_right_message_per_broken_prerequisite() {
    let sim = demo(Durations::fast()).await;
    let client = sim.client();
    let kc = sim.kubeconfig_path().to_path_buf();
    install_cert_manager_deployments(&client).await;
    install_operator_footprint(&client).await;

    // A blocked rotation.
    let tars: Api<TrustAnchorRotation> = Api::all(client.clone());
    tars.patch_status(
        "cluster",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"phase": "PropagatingTrustRoots", "blockingMessage": "pod emojivoto/web-1 does not restart"}})),
    )
    .await
    .expect("patch status");
    let out = cli(&kc, &["check", "--wait=0s"]).await;
    assert_eq!(out.code, 1);
    assert!(check_line(&out.stdout, "trust anchor rotation is not blocked").starts_with('×'));
    assert!(out.stdout.contains(
        "    blocked in phase PropagatingTrustRoots: pod emojivoto/web-1 does not restart\n    see https://github.com/linkerd-trust/trust-rotation-operator/blob/main/docs/checks.md#ltr-rotation-not-blocked for hints\n"
    ), "{}", out.stdout);

    // The operator Deployment is gone.
    Api::<Deployment>::namespaced(client.clone(), "linkerd")
        .delete("trust-rotation-operator", &DeleteParams::default())
        .await
        .expect("delete operator");
    // A missing resource is reported at once, not retried for the whole --wait (linkerd
    // check would wait on us).
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        cli(&kc, &["check", "--wait=5m0s", "-o", "short"]),
    )
    .await
    .expect("a missing Deployment is not retried for 5 minutes");
    assert_eq!(out.code, 1);
    assert!(out.stdout.contains("× trust-rotation-operator Deployment is available\n    Deployment linkerd/trust-rotation-operator not found"), "{}", out.stdout);

    // A garbage bundle, named precisely; the issuer check then cannot pass either.
    let anchor = secret_crt(&client, "cert-manager", "linkerd-trust-anchor").await;
    set_trust_roots(&client, &format!("{anchor}hello world\n")).await;
    let out = cli(&kc, &["check", "--pre", "--wait=0s"]).await;
    assert_eq!(out.code, 1);
    assert!(
        check_line(&out.stdout, "trust roots contain only valid certificates").starts_with('×')
    );
    assert!(
        out.stdout.contains("unexpected text \"hello world\""),
        "{}",
        out.stdout
    );

    // A bundle without the current anchor (an unrelated root only).
    let other_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let other_root = params.self_signed(&other_key).unwrap().pem();
    set_trust_roots(&client, &other_root).await;
    let out = cli(&kc, &["check", "--pre", "--wait=0s"]).await;
    assert!(
        check_line(&out.stdout, "trust roots include the current trust anchor").starts_with('×')
    );
    assert!(check_line(
        &out.stdout,
        "issuer cert is issued by a trust anchor in the bundle"
    )
    .starts_with('×'));
    set_trust_roots(&client, &anchor).await;

    // rotationPolicy Never is a warning: reported, exit 0.
    let certs: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        "cert-manager",
        &linkerd_trust::certmanager::certificate(),
    );
    certs
        .patch(
            "linkerd-trust-anchor",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"privateKey": {"rotationPolicy": "Never"}}})),
        )
        .await
        .expect("patch certificate");
    // cert-manager may re-issue the anchor after the spec change: re-seed until it settles.
    let mut out = cli(&kc, &["check", "--pre", "--wait=0s"]).await;
    for _ in 0..50 {
        if out.code == 0 {
            break;
        }
        let anchor = secret_crt(&client, "cert-manager", "linkerd-trust-anchor").await;
        set_trust_roots(&client, &anchor).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        out = cli(&kc, &["check", "--pre", "--wait=0s"]).await;
    }
    assert_eq!(out.code, 0, "{}", out.stdout);
    assert!(check_line(
        &out.stdout,
        "trust anchor Certificate uses rotationPolicy Always"
    )
    .starts_with('‼'));
    assert!(out.stdout.ends_with("Status check results are √\n"));

    // --fail-within turns a short horizon into a failure (the demo anchor lives a year).
    let out = cli(&kc, &["check", "--pre", "--wait=0s", "--fail-within=9000h"]).await;
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert!(
        check_line(&out.stdout, "trust anchor is valid for at least 9000h0m0s").starts_with('×')
    );

    // A missing identity issuer Certificate.
    let l5d_certs: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        "linkerd",
        &linkerd_trust::certmanager::certificate(),
    );
    l5d_certs
        .delete("linkerd-identity-issuer", &DeleteParams::default())
        .await
        .expect("delete issuer certificate");
    let out = cli(&kc, &["check", "--pre", "--wait=0s"]).await;
    assert!(check_line(
        &out.stdout,
        "identity issuer Certificate exists and is ready"
    )
    .starts_with('×'));
    assert!(
        out.stdout
            .contains("Certificate linkerd/linkerd-identity-issuer not found"),
        "{}",
        out.stdout
    );
    // A trust-manager Bundle fighting over the ConfigMap.
    let crd: CustomResourceDefinition = serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "bundles.trust.cert-manager.io"},
        "spec": {
            "group": "trust.cert-manager.io", "scope": "Cluster",
            "names": {"plural": "bundles", "singular": "bundle", "kind": "Bundle", "listKind": "BundleList"},
            "versions": [{"name": "v1alpha1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]
        }
    }))
    .expect("valid CRD");
    Api::<CustomResourceDefinition>::all(client.clone())
        .create(&PostParams::default(), &crd)
        .await
        .expect("create trust-manager CRD");
    let bundles: Api<DynamicObject> = Api::all_with(
        client.clone(),
        &linkerd_trust::certmanager::trust_manager_bundle(),
    );
    let bundle: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "trust.cert-manager.io/v1alpha1", "kind": "Bundle",
        "metadata": {"name": "linkerd-identity-trust-roots"},
        "spec": {"sources": [{"secret": {"name": "linkerd-trust-anchor", "key": "ca.crt"}}],
                 "target": {"configMap": {"key": "ca-bundle.crt"}}}
    }))
    .expect("valid Bundle");
    let mut created = false;
    for _ in 0..50 {
        if bundles
            .create(&PostParams::default(), &bundle)
            .await
            .is_ok()
        {
            created = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(created, "the Bundle is created once its CRD is served");
    let out = cli(&kc, &["check", "--pre", "--wait=0s"]).await;
    assert!(
        check_line(&out.stdout, "no other controller manages the trust roots").starts_with('×')
    );
    assert!(
        out.stdout.contains("trust-manager Bundle linkerd-identity-trust-roots manages ConfigMap linkerd-identity-trust-roots"),
        "{}",
        out.stdout
    );
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspect_lists_unconverged_pods_with_their_reason_and_fix() {
    // Long-lived workload certificates, so that pods keep the old issuer's until restarted.
    let durations = Durations {
        workload_cert_lifetime: Duration::from_secs(3600),
        ..Durations::fast()
    };
    let sim = demo(durations).await;
    let client = sim.client();
    let kc = sim.kubeconfig_path().to_path_buf();

    // Converged: nothing to list (probing through the API server's port-forward).
    let out = cli(&kc, &["inspect", "--timeout", "5s"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.contains("Trust bundle:        4/4 pods current"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("Workload certs:      4/4 pods on the active issuer"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("All meshed pods have converged."),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("TrustAnchorRotation cluster not found"),
        "{}",
        out.stdout
    );

    // The identity issuer is renewed (as in step 3): running proxies keep certificates from
    // the old issuer until they are restarted.
    let old_issuer = secret_crt(&client, "linkerd", "linkerd-identity-issuer").await;
    let out = cli(&kc, &["renew", "issuer"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.starts_with(
        "Manually triggered issuance of Certificate linkerd/linkerd-identity-issuer\n"
    ));
    let mut renewed = false;
    for _ in 0..200 {
        if secret_crt(&client, "linkerd", "linkerd-identity-issuer").await != old_issuer {
            renewed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        renewed,
        "cert-manager re-issued the identity issuer after `renew issuer`"
    );
    let out = cli(&kc, &["inspect", "-o", "json", "--probe", "port-forward"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let report: Value =
        serde_json::from_str(&out.stdout).expect("inspect -o json is one JSON document");
    assert_eq!(report["observed"]["trustBundle"]["summary"], "4/4");
    // Outside a rotation that is routine: the old issuer chains to the trust anchor, so no
    // pod is flagged and no restart is suggested; inspect says when they renew by themselves.
    assert_eq!(report["observed"]["workloadCertificates"]["summary"], "4/4");
    assert_eq!(
        report["pods"].as_array().map(Vec::len),
        Some(0),
        "{report:#}"
    );
    assert_eq!(report["previousIssuer"]["pods"], 4, "{report:#}");
    let renewed_by: jiff::Timestamp = report["previousIssuer"]["renewedBy"]
        .as_str()
        .expect("renewedBy")
        .parse()
        .expect("a timestamp");
    assert!(renewed_by > jiff::Timestamp::now(), "{report:#}");
    let out = cli(&kc, &["inspect"]).await;
    assert!(
        out.stdout.contains("4 on a previous issuer: healthy")
            && out.stdout.contains("All meshed pods have converged."),
        "{}",
        out.stdout
    );

    // A stale bundle: every workload pod is listed with its restart command.
    let anchor = secret_crt(&client, "cert-manager", "linkerd-trust-anchor").await;
    set_trust_roots(&client, &format!("{anchor}{old_issuer}")).await;
    let out = cli(&kc, &["inspect", "--no-probe"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.contains("Trust bundle:        0/4 pods current"),
        "{}",
        out.stdout
    );
    let web_line = out
        .stdout
        .lines()
        .find(|l| l.contains("deployment/web"))
        .expect("web row");
    assert!(web_line.starts_with("emojivoto"), "{web_line}");
    assert!(
        web_line.contains("stale")
            && web_line.ends_with("kubectl -n emojivoto rollout restart deployment/web"),
        "{web_line}"
    );

    // Slow proxies hit the per-pod timeout (the API server answers after 1.5s).
    sim.faults().set(FaultConfig {
        latency: Duration::from_millis(1500),
        ..FaultConfig::default()
    });
    let out = cli(
        &kc,
        &[
            "inspect",
            "-o",
            "json",
            "--timeout",
            "300ms",
            "--concurrency",
            "4",
        ],
    )
    .await;
    sim.faults().set(FaultConfig::default());
    assert_eq!(out.code, 0, "{}", out.stderr);
    let report: Value = serde_json::from_str(&out.stdout).expect("JSON");
    let pods = report["pods"].as_array().expect("pods");
    assert_eq!(pods.len(), 4);
    assert!(
        pods.iter().all(|p| p["certificate"] == "timed-out"),
        "{report:#}"
    );
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renew_anchor_drives_cert_manager_and_bad_input_is_one_line() {
    let sim = demo(Durations::fast()).await;
    let client = sim.client();
    let kc = sim.kubeconfig_path().to_path_buf();
    let before = secret_crt(&client, "cert-manager", "linkerd-trust-anchor").await;
    let out = cli(&kc, &["renew", "anchor"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("What happens next"));
    let mut renewed = false;
    for _ in 0..200 {
        if secret_crt(&client, "cert-manager", "linkerd-trust-anchor").await != before {
            renewed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(renewed, "cert-manager issued a new trust anchor");

    // Missing names and a missing CRD: one line on stderr, nothing on stdout, exit 1.
    for args in [
        &["renew", "anchor", "--trust-anchor", "nope"][..],
        &["bundle", "--trust-anchor-secret", "nope"][..],
        &["status"][..],
        &["inspect", "--trust-roots", "nope"][..],
    ] {
        let out = cli(&kc, args).await;
        assert_eq!(out.code, 1, "{args:?}");
        assert!(out.stdout.is_empty(), "{args:?}: {}", out.stdout);
        assert_eq!(out.stderr.lines().count(), 1, "{args:?}: {}", out.stderr);
        assert!(
            out.stderr.starts_with("Error: ") && out.stderr.contains("not found"),
            "{}",
            out.stderr
        );
    }

    // A Secret holding garbage.
    Api::<Secret>::namespaced(client.clone(), "cert-manager")
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": "garbage", "namespace": "cert-manager"},
                "stringData": {"tls.crt": "not a certificate"},
                "data": {"tls.crt": "bm90IGEgY2VydGlmaWNhdGU="}
            }))
            .unwrap(),
        )
        .await
        .expect("create garbage secret");
    let out = cli(
        &kc,
        &["bundle", "--trust-anchor-secret", "garbage", "-o", "json"],
    )
    .await;
    assert_eq!(out.code, 1);
    assert!(out.stdout.is_empty());
    assert!(
        out.stderr
            .contains("Secret cert-manager/garbage key tls.crt"),
        "{}",
        out.stderr
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn unreachable_cluster_is_one_line_saying_what_to_do() {
    // A kubeconfig pointing at a closed loopback port.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let dir = tempfile::tempdir().unwrap();
    let kc = dir.path().join("kubeconfig");
    std::fs::write(
        &kc,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: http://127.0.0.1:{port}\n\
             contexts:\n- name: c\n  context:\n    cluster: c\n    user: u\ncurrent-context: c\nusers:\n- name: u\n  user:\n    token: t\n"
        ),
    )
    .unwrap();
    let out = cli(&kc, &["bundle"]).await;
    assert_eq!(out.code, 1);
    assert!(out.stdout.is_empty());
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("cannot reach the Kubernetes API server"),
        "{}",
        out.stderr
    );
    let out = cli(&kc, &["check", "-o", "json", "--wait=0s"]).await;
    assert_eq!(out.code, 1);
    let (results, _) = linkerd_trust::check::format::parse_like_linkerd(&out.stdout).unwrap();
    assert_eq!(
        results.last().unwrap().description,
        "can query the Kubernetes API"
    );
    assert!(results
        .last()
        .unwrap()
        .error
        .as_deref()
        .unwrap()
        .contains("cannot reach"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_watch_follows_phases_until_synced() {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let sim = demo(Durations::fast()).await;
    let client = sim.client();
    let kc = sim.kubeconfig_path().to_path_buf();
    install_operator_footprint(&client).await;
    let mut child = tokio::process::Command::new(BIN)
        .args(["status", "--watch"])
        .env("KUBECONFIG", &kc)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn status --watch");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let first = lines.next_line().await.unwrap().expect("first line");
    assert!(first.contains("Pending"), "{first}");
    let tars: Api<TrustAnchorRotation> = Api::all(client.clone());
    for status in [
        json!({"phase": "RefreshingControlPlane"}),
        json!({"phase": "PropagatingTrustRoots", "trustBundle": {"converged": 1, "target": 4, "summary": "1/4"}}),
        json!({"phase": "PropagatingTrustRoots", "trustBundle": {"converged": 4, "target": 4, "summary": "4/4"}}),
        json!({"phase": "Synced"}),
    ] {
        tars.patch_status(
            "cluster",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": status})),
        )
        .await
        .expect("patch status");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut seen = vec![first];
    let collect = async {
        while let Ok(Some(l)) = lines.next_line().await {
            seen.push(l);
        }
    };
    tokio::time::timeout(Duration::from_secs(20), collect)
        .await
        .expect("status --watch ends once Synced again");
    let code = child.wait().await.expect("exit").code();
    assert_eq!(code, Some(0));
    let phases: Vec<&str> = seen
        .iter()
        .map(|l| l.split_whitespace().nth(1).unwrap_or_default())
        .collect();
    assert_eq!(
        phases,
        [
            "Pending",
            "RefreshingControlPlane",
            "PropagatingTrustRoots",
            "PropagatingTrustRoots",
            "Synced"
        ],
        "{seen:#?}"
    );
    assert!(
        seen[2].contains("bundle 1/4") && seen[3].contains("bundle 4/4"),
        "{seen:#?}"
    );
    // Every line starts with a UTC timestamp.
    assert!(seen.iter().all(|l| l
        .split_whitespace()
        .next()
        .is_some_and(|t| t.parse::<jiff::Timestamp>().is_ok())));
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_wait_retries_until_prerequisites_become_healthy() {
    let sim = demo(Durations::fast()).await;
    let client = sim.client();
    let kc = sim.kubeconfig_path().to_path_buf();
    remove_cert_manager_deployments(&client).await;
    // Started while cert-manager's Deployments do not exist...
    let check = tokio::process::Command::new(BIN)
        .args(["check", "--pre", "--wait=30s", "-o", "short"])
        .env("KUBECONFIG", &kc)
        .output();
    let install = async {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        install_cert_manager_deployments(&client).await;
    };
    let (out, ()) = tokio::join!(check, install);
    let out = out.expect("run check");
    // ...it keeps retrying and ends green once they are available.
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "Status check results are √\n"
    );
    sim.shutdown().await;
}

/// The guide's order: `linkerd check` runs after Linkerd is installed and before the
/// operator is. Our checks must not fail there: the operator category says it is not
/// installed yet, as a warning with the install command (as Linkerd's extensions do), and
/// the run succeeds — in every format, and the way `linkerd check` reads our JSON.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_during_installation_warns_that_the_operator_is_not_installed_yet() {
    // cert-manager, the guide's PKI, the seeded bundle and Linkerd; no CRD, no operator.
    let sim = demo(Durations::fast()).await;
    let client = sim.client();
    let kc = sim.kubeconfig_path().to_path_buf();
    install_cert_manager_deployments(&client).await;

    const HINTS: &str =
        "https://github.com/linkerd-trust/trust-rotation-operator/blob/main/docs/checks.md";
    // The charts of the release that matches this CLI.
    let version = env!("CARGO_PKG_VERSION");
    let not_installed = format!(
        "\
linkerd-trust-operator
----------------------
‼ TrustAnchorRotation CRD is installed
    the trust-rotation operator is not installed yet (no trustanchorrotations.trust.linkerd.io CRD). It can be installed by running `helm install -n linkerd trust-rotation-operator-crds oci://ghcr.io/linkerd-trust/charts/trust-rotation-operator-crds --version {version} --wait && helm install -n linkerd trust-rotation-operator oci://ghcr.io/linkerd-trust/charts/trust-rotation-operator --version {version} --wait`
    see {HINTS}#ltr-crd-installed for hints

Status check results are √
"
    );

    let out = cli(&kc, &["check", "--wait=10s"]).await;
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let expected = format!(
        "\
linkerd-trust-kubernetes-api
----------------------------
√ can initialize the client
√ can query the Kubernetes API

linkerd-trust-cert-manager
--------------------------
√ cert-manager CRDs are installed
√ cert-manager Deployments are available

linkerd-trust-pki
-----------------
√ trust root Issuer exists and is ready
√ trust anchor Certificate exists and is ready
√ trust anchor Certificate uses rotationPolicy Always
√ identity issuer ClusterIssuer exists and is ready
√ identity issuer Certificate exists and is ready
√ trust anchor is a CA certificate
√ trust anchor is using supported crypto algorithm
√ trust anchor is within its validity period
√ trust anchor is valid for at least 60 days
√ issuer cert is using supported crypto algorithm
√ issuer cert is within its validity period
√ issuer cert is issued by a trust anchor in the bundle

linkerd-trust-bundle
--------------------
√ trust roots ConfigMap exists
√ trust roots contain only valid certificates
√ trust roots include the current trust anchor
√ no other controller manages the trust roots

{not_installed}"
    );
    assert_eq!(out.stdout, expected);
    assert!(!out.stdout.contains('×'));

    // -o short: only the warning.
    let out = cli(&kc, &["check", "--wait=10s", "-o", "short"]).await;
    assert_eq!(out.code, 0, "{}", out.stdout);
    assert_eq!(out.stdout, not_installed);

    // What `linkerd check` runs (its forwarded flags, JSON): a warning, not a failure, and
    // none of the operator's other checks.
    let out = cli(
        &kc,
        &[
            "check",
            "--as-group=[]",
            "--proxy=false",
            "--verbose=false",
            "--wait=5m0s",
            "--linkerd-namespace=linkerd",
            "--namespace=",
            "--output=json",
        ],
    )
    .await;
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let (results, success) = linkerd_trust::check::format::parse_like_linkerd(&out.stdout)
        .expect("check -o json is what linkerd check expects");
    assert!(success, "{}", out.stdout);
    use linkerd_trust::check::format::Outcome;
    let warned: Vec<_> = results
        .iter()
        .filter(|r| r.outcome != Outcome::Success)
        .collect();
    assert_eq!(warned.len(), 1, "{results:#?}");
    assert_eq!(warned[0].outcome, Outcome::Warning);
    assert_eq!(warned[0].category, "linkerd-trust-operator");
    assert_eq!(
        warned[0].description,
        "TrustAnchorRotation CRD is installed"
    );
    assert_eq!(
        results
            .iter()
            .filter(|r| r.category == "linkerd-trust-operator")
            .count(),
        1,
        "the operator's other checks are skipped while it is not installed"
    );
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["success"], true);
    sim.shutdown().await;
}

fn fingerprint(pem: &str) -> String {
    trust_rotation_steps::pki::parse_pem_certificate(pem)
        .expect("PEM certificate")
        .fingerprint()
        .to_string()
}

/// The reproduction: mid-rotation, re-running the README's bootstrap
/// (`linkerd trust bundle | kubectl apply -f -`) must keep the old root, and renewing out of
/// order is refused with the reason. The rotation's status is written by hand here (the
/// operator's own handling of an overwritten bundle is in the operator's e2e tests).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bundle_and_renew_mid_rotation_keep_the_old_root_and_refuse_out_of_order() {
    let sim = demo(Durations::fast()).await;
    let client = sim.client();
    let kc = sim.kubeconfig_path().to_path_buf();
    install_operator_footprint(&client).await;
    let old = secret_crt(&client, "cert-manager", "linkerd-trust-anchor").await;

    // The anchor is renewed; the previous one is kept where the operator keeps it.
    let out = cli(&kc, &["renew", "anchor"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let mut new = old.clone();
    for _ in 0..200 {
        new = secret_crt(&client, "cert-manager", "linkerd-trust-anchor").await;
        if new != old {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_ne!(new, old, "cert-manager issued a new trust anchor");
    let previous: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "linkerd-previous-anchor", "namespace": "cert-manager"},
        "stringData": {"tls.crt": old}
    }))
    .unwrap();
    Api::<Secret>::namespaced(client.clone(), "cert-manager")
        .create(&PostParams::default(), &previous)
        .await
        .expect("create the previous-anchor Secret");
    let tars: Api<TrustAnchorRotation> = Api::all(client.clone());
    let set_phase = |phase: &'static str, at: &'static str| {
        let steps: Vec<Value> = trust_rotation_steps::rotation::workflow()
            .steps()
            .iter()
            .scan(false, |reached, s| {
                let state = if s.name() == at {
                    *reached = true;
                    "Waiting"
                } else if *reached {
                    "Pending"
                } else {
                    "Done"
                };
                Some(json!({"name": s.name(), "phase": phase, "state": state, "attempts": 1}))
            })
            .collect();
        json!({"status": {
            "phase": phase,
            "currentStep": at,
            "steps": steps,
            "rotation": {
                "id": "r1",
                "trigger": "trust anchor renewed",
                "fromAnchor": fingerprint(&old),
                "toAnchor": fingerprint(&new),
                "startedAt": "2026-12-01T10:00:00Z"
            }
        }})
    };
    tars.patch_status(
        "cluster",
        &PatchParams::default(),
        &Patch::Merge(set_phase("PropagatingTrustRoots", "AwaitPropagation")),
    )
    .await
    .expect("patch status");

    // The expanded bundle is kept whole by a re-run bootstrap.
    set_trust_roots(&client, &format!("{old}{new}")).await;
    let applied = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("{BIN} bundle | kubectl apply -f -"))
        .env("KUBECONFIG", &kc)
        .output()
        .expect("run sh");
    assert!(
        applied.status.success(),
        "{}",
        String::from_utf8_lossy(&applied.stderr)
    );
    let stderr = String::from_utf8_lossy(&applied.stderr);
    assert!(
        stderr.contains("a rotation is in progress: PropagatingTrustRoots"),
        "the person learns why the bundle is not the anchor alone: {stderr}"
    );
    assert_eq!(trust_roots(&client).await, format!("{old}{new}"));

    // A GitOps overwrite to the new anchor alone: the plan puts the old root back.
    set_trust_roots(&client, &new).await;
    let out = cli(&kc, &["bundle", "--dry-run"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let old_fp = fingerprint(&old);
    let added = out
        .stdout
        .lines()
        .find(|l| l.trim_start().starts_with('+'))
        .unwrap_or_else(|| panic!("no root added in:\n{}", out.stdout));
    assert!(
        added.contains(&old_fp[..12]) && added.contains("rotation in progress still needs"),
        "{}",
        out.stdout
    );
    let out = cli(&kc, &["bundle", "-o", "json"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let v: Value = serde_json::from_str(&out.stdout).expect("JSON");
    let planned = v["data"]["ca-bundle.crt"].as_str().unwrap_or_default();
    assert!(
        planned.contains(old.trim()) && planned.contains(new.trim()),
        "{planned}"
    );

    // Renewing the issuer before every pod trusts the new anchor is refused; so is renewing
    // the anchor again. Nothing is written.
    let issuer_before = secret_crt(&client, "linkerd", "linkerd-identity-issuer").await;
    let out = cli(&kc, &["renew", "issuer"]).await;
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert!(out.stdout.is_empty());
    assert!(
        out.stderr.starts_with("Error: refusing to renew")
            && out.stderr.contains("WaitingForIdentityRotation")
            && out.stderr.contains("--force"),
        "{}",
        out.stderr
    );
    let out = cli(&kc, &["renew", "anchor"]).await;
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert!(out.stderr.contains("already in progress"), "{}", out.stderr);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        secret_crt(&client, "linkerd", "linkerd-identity-issuer").await,
        issuer_before,
        "a refused renewal changes nothing"
    );
    assert_eq!(
        secret_crt(&client, "cert-manager", "linkerd-trust-anchor").await,
        new
    );

    // At WaitingForIdentityRotation the issuer renewal goes through.
    tars.patch_status(
        "cluster",
        &PatchParams::default(),
        &Patch::Merge(set_phase("WaitingForIdentityRotation", "AwaitIssuer")),
    )
    .await
    .expect("patch status");
    let out = cli(&kc, &["renew", "issuer"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.starts_with("Manually triggered issuance"));
    sim.shutdown().await;
}
