//! The read layer against the simulator's demo topology: what the operator and the CLI read
//! (the PKI Secrets, the trust bundle, the control plane's Deployments), and each kind of
//! failure as a typed error with its category.

use cluster_sim::mesh::{Durations, Topology};
use cluster_sim::{ErrorRule, FaultConfig};
use cluster_sim::{Sim, SimConfig};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use serde_json::json;
use trust_rotation_crds::{CertificateRef, ConfigMapRef, SecretRef};
use trust_rotation_steps::error::ErrorCategory;
use trust_rotation_steps::read::{self, ReadError};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_the_demo_pki_bundle_and_control_plane_with_typed_errors() {
    let sim = Sim::start(SimConfig {
        topology: Topology::Demo,
        durations: Durations::fast(),
        ..SimConfig::default()
    })
    .await
    .expect("demo starts");
    let client = sim.client();

    let anchor_ref = CertificateRef::default_trust_anchor();
    let issuer_ref = CertificateRef::default_identity_issuer();
    let roots = ConfigMapRef::default();
    let anchor = read::anchor(&client, &anchor_ref).await.expect("anchor");
    assert!(anchor.is_ca());
    let chain = read::issuer_chain(&client, &issuer_ref)
        .await
        .expect("issuer");
    assert!(chain[0].is_signed_by(&anchor));
    let bundle = read::trust_bundle(&client, &roots).await.expect("bundle");
    assert!(bundle.bundle.contains(anchor.fingerprint()));
    assert_eq!(bundle.owner, None);
    // No previous anchor before the first rotation.
    let prev = SecretRef::default_previous_anchor();
    assert_eq!(read::previous_anchor(&client, &prev).await.unwrap(), None);

    // The control plane is rolled out, by the one definition.
    let views = read::deployments(&client, "linkerd").await.expect("list");
    assert!(views.len() >= 3, "{views:?}");
    assert!(views.iter().all(|v| v.rollout_complete()), "{views:?}");
    let since = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(3600);
    let identity = read::deployment_since(&client, "linkerd", "linkerd-identity", since)
        .await
        .expect("identity");
    assert!(
        !identity.stale_pods.is_empty(),
        "every pod started before a time in the future is stale"
    );

    // Missing: a Secret that does not exist, a Deployment that does not exist.
    let nope = CertificateRef {
        secret: "nope".into(),
        ..anchor_ref.clone()
    };
    let e = read::anchor(&client, &nope).await.unwrap_err();
    assert!(e.is_missing(), "{e:?}");
    assert_eq!(e.category(), ErrorCategory::MissingResource);
    assert!(
        e.to_string().starts_with(
            "Secret cert-manager/nope not found: install the linkerd-cert-manager chart"
        ),
        "{e}"
    );
    let e = read::deployment(&client, "linkerd", "nope")
        .await
        .unwrap_err();
    assert!(e.is_missing());

    // Invalid: a Secret written with stringData that is not a certificate.
    Api::<Secret>::namespaced(client.clone(), "cert-manager")
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": "garbage", "namespace": "cert-manager"},
                "stringData": {"tls.crt": "not a certificate"},
            }))
            .unwrap(),
        )
        .await
        .expect("create garbage Secret");
    let garbage = CertificateRef {
        secret: "garbage".into(),
        ..anchor_ref.clone()
    };
    let e = read::anchor(&client, &garbage).await.unwrap_err();
    assert!(matches!(e, ReadError::Invalid { .. }), "{e:?}");
    assert_eq!(e.category(), ErrorCategory::InvalidCertificate);
    assert!(
        e.to_string()
            .starts_with("Secret cert-manager/garbage key tls.crt: unexpected text"),
        "{e}"
    );

    // API failures: classified once, transient or not (500: kube's client retries
    // 429/503/504 by itself for minutes).
    sim.faults().set(FaultConfig {
        errors: vec![ErrorRule::parse("get:secrets:500:1").unwrap()],
        ..FaultConfig::default()
    });
    let e = read::anchor(&client, &anchor_ref).await.unwrap_err();
    sim.faults().set(FaultConfig::default());
    assert!(matches!(e, ReadError::Api { .. }), "{e:?}");
    assert_eq!(e.category(), ErrorCategory::KubeServer);
    assert!(e.is_transient());
    assert!(
        e.to_string()
            .starts_with("reading Secret cert-manager/linkerd-trust-anchor: "),
        "{e}"
    );
    sim.shutdown().await;
}
