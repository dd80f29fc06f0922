//! Fault injection (deterministic from the seed) and the API server's own `/metrics`.

use cluster_sim::{ErrorRule, FaultConfig, Sim, SimConfig};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;

/// A client that does not retry 429/503 itself (kube's default client does, honouring
/// `Retry-After`), so the test sees each injected answer.
async fn no_retry_client(sim: &Sim) -> kube::Client {
    let kc = kube::config::Kubeconfig::read_from(sim.kubeconfig_path())
        .unwrap_or_else(|e| panic!("{e}"));
    let mut config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    config.default_retry = false;
    kube::Client::try_from(config).unwrap_or_else(|e| panic!("{e}"))
}

fn rule(s: &str) -> ErrorRule {
    ErrorRule::parse(s).unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test]
async fn injected_errors_are_statuses_with_retry_after_and_can_be_switched_off() {
    let faults = FaultConfig {
        errors: vec![rule("list:configmaps:429:1:3")],
        ..Default::default()
    };
    let sim = Sim::start(SimConfig {
        faults,
        ..Default::default()
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));
    let cms: Api<ConfigMap> = Api::default_namespaced(no_retry_client(&sim).await);
    match cms.list(&ListParams::default()).await {
        Err(kube::Error::Api(s)) => {
            assert_eq!((s.code, s.reason.as_str()), (429, "TooManyRequests"));
            assert_eq!(s.details.map(|d| d.retry_after_seconds), Some(3));
        }
        other => panic!("expected an injected 429, got {other:?}"),
    }
    // Other verbs on the same resource are untouched.
    let c: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "c"}})).unwrap_or_default();
    cms.create(&PostParams::default(), &c)
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    sim.faults().set(FaultConfig {
        conflict_rate: 1.0,
        ..Default::default()
    });
    assert_eq!(
        cms.list(&ListParams::default())
            .await
            .map(|l| l.items.len())
            .ok(),
        Some(1)
    );
    let mut current = cms.get("c").await.unwrap_or_else(|e| panic!("{e}"));
    current.data = Some([("k".to_string(), "v".to_string())].into());
    match cms.replace("c", &PostParams::default(), &current).await {
        Err(kube::Error::Api(s)) => assert_eq!((s.code, s.reason.as_str()), (409, "Conflict")),
        other => panic!("expected an injected conflict, got {other:?}"),
    }
    sim.faults().set(FaultConfig::default());
    cms.replace("c", &PostParams::default(), &current)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    sim.shutdown().await;
}

async fn outcomes(seed: u64) -> Vec<bool> {
    let faults = FaultConfig {
        errors: vec![rule("get:namespaces:503:0.5")],
        ..Default::default()
    };
    let sim = Sim::start(SimConfig {
        faults,
        seed,
        ..Default::default()
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));
    let api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(no_retry_client(&sim).await);
    let mut out = Vec::new();
    for _ in 0..40 {
        out.push(api.get("default").await.is_ok());
    }
    sim.shutdown().await;
    out
}

#[tokio::test]
async fn the_same_seed_injects_the_same_faults() {
    let a = outcomes(42).await;
    let b = outcomes(42).await;
    let c = outcomes(7).await;
    assert_eq!(a, b, "same seed, same requests, same faults");
    assert!(
        a.iter().any(|ok| *ok) && a.iter().any(|ok| !*ok),
        "a 50% rate fails some requests, not all"
    );
    assert_ne!(a, c, "another seed gives other faults");
}

#[tokio::test]
async fn metrics_count_requests_by_verb_resource_client_and_code() {
    let sim = Sim::start(SimConfig::default())
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let client = sim.client();
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    for _ in 0..3 {
        cms.list(&ListParams::default())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let _ = cms.get("missing").await;
    let req = http::Request::get("/metrics")
        .body(Vec::new())
        .unwrap_or_else(|e| panic!("{e}"));
    let text = client
        .request_text(req)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let line = |prefix: &str| {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .map(str::to_string)
    };
    let lists = line("cluster_sim_requests_total{verb=\"list\",resource=\"configmaps\"")
        .unwrap_or_else(|| panic!("no list counter in\n{text}"));
    assert!(
        lists.ends_with(" 3") && lists.contains("code=\"200\""),
        "{lists}"
    );
    let missing = line("cluster_sim_requests_total{verb=\"get\",resource=\"configmaps\"")
        .unwrap_or_else(|| panic!("no get counter in\n{text}"));
    assert!(
        missing.contains("code=\"404\"") && missing.ends_with(" 1"),
        "{missing}"
    );
    assert!(text.contains("cluster_sim_open_watches 0"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("cluster_sim_objects{resource=\"namespaces\"}")),
        "{text}"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn requests_without_the_token_are_401() {
    let sim = Sim::start(SimConfig::default())
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let kc = kube::config::Kubeconfig::read_from(sim.kubeconfig_path())
        .unwrap_or_else(|e| panic!("{e}"));
    let mut config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    config.auth_info.token = None;
    let anonymous = kube::Client::try_from(config).unwrap_or_else(|e| panic!("{e}"));
    match Api::<ConfigMap>::default_namespaced(anonymous)
        .list(&ListParams::default())
        .await
    {
        Err(kube::Error::Api(s)) => assert_eq!(s.code, 401),
        other => panic!("expected 401, got {other:?}"),
    }
    sim.shutdown().await;
}
