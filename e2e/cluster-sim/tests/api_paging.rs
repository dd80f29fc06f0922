//! Paginated lists as a real API server serves them: every continuation page comes from
//! the first page's snapshot (same resourceVersion, nothing lost or duplicated while
//! objects are deleted and created between pages), and a continue token whose snapshot
//! has been compacted away answers `410 Expired` with a token that continues at the latest
//! state.

use cluster_sim::store::MAX_LIST_SNAPSHOTS;
use cluster_sim::{Sim, SimConfig};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde_json::json;
use std::collections::BTreeSet;

async fn sim() -> Sim {
    Sim::start(SimConfig::default())
        .await
        .unwrap_or_else(|e| panic!("starting the simulator: {e:#}"))
}

fn api_error(e: kube::Error) -> kube::core::Status {
    match e {
        kube::Error::Api(s) => *s,
        other => panic!("expected an API error Status, got {other:?}"),
    }
}

async fn namespace(client: &kube::Client, name: &str) {
    let ns: Namespace =
        serde_json::from_value(json!({"metadata": {"name": name}})).unwrap_or_default();
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap_or_else(|e| panic!("creating namespace {name}: {e}"));
}

fn pod(name: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"app": "paged"}},
        "spec": {"containers": [{"name": "app", "image": "busybox"}]},
    }))
    .unwrap_or_default()
}

fn names<K: kube::Resource>(items: &[K]) -> Vec<String> {
    items.iter().filter_map(|i| i.meta().name.clone()).collect()
}

#[tokio::test]
async fn continuation_pages_come_from_the_first_pages_snapshot() {
    let sim = sim().await;
    let client = sim.client();
    for ns in ["a", "b"] {
        namespace(&client, ns).await;
    }
    let (pods_a, pods_b): (Api<Pod>, Api<Pod>) = (
        Api::namespaced(client.clone(), "a"),
        Api::namespaced(client.clone(), "b"),
    );
    let mut expected = BTreeSet::new();
    for i in 0..12 {
        let name = format!("p{i:02}");
        pods_a
            .create(&PostParams::default(), &pod(&name))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        pods_b
            .create(&PostParams::default(), &pod(&name))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        expected.insert(format!("a/{name}"));
        expected.insert(format!("b/{name}"));
    }
    let all: Api<Pod> = Api::all(client.clone());
    let first = all
        .list(&ListParams::default().limit(5))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let rv = first.metadata.resource_version.clone().unwrap_or_default();
    assert_eq!(first.items.len(), 5);
    assert_eq!(first.metadata.remaining_item_count, Some(19));
    let mut seen: Vec<String> = first
        .items
        .iter()
        .map(|p| {
            format!(
                "{}/{}",
                p.metadata.namespace.as_deref().unwrap_or(""),
                p.metadata.name.as_deref().unwrap_or("")
            )
        })
        .collect();
    let mut token = first.metadata.continue_.clone();
    let mut round = 0;
    while let Some(t) = token.filter(|t| !t.is_empty()) {
        // Between pages, pods still ahead in the list go away and new ones come: the list
        // must still be the first page's state.
        round += 1;
        let doomed = format!("p{:02}", 11 - round);
        pods_b
            .delete(&doomed, &DeleteParams::default())
            .await
            .unwrap_or_else(|e| panic!("deleting b/{doomed}: {e}"));
        pods_a
            .create(&PostParams::default(), &pod(&format!("new{round}")))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let page = all
            .list(&ListParams::default().limit(5).continue_token(&t))
            .await
            .unwrap_or_else(|e| panic!("continuing the list: {e}"));
        assert_eq!(
            page.metadata.resource_version.as_deref(),
            Some(rv.as_str()),
            "every page is served at the first page's resourceVersion"
        );
        seen.extend(page.items.iter().map(|p| {
            format!(
                "{}/{}",
                p.metadata.namespace.as_deref().unwrap_or(""),
                p.metadata.name.as_deref().unwrap_or("")
            )
        }));
        token = page.metadata.continue_.clone();
    }
    assert!(round >= 4, "the list took several pages ({round})");
    let unique: BTreeSet<String> = seen.iter().cloned().collect();
    assert_eq!(unique.len(), seen.len(), "no pod is listed twice: {seen:?}");
    assert_eq!(
        unique, expected,
        "exactly the pods that existed at the first page"
    );

    // A list restricted to a namespace and filtered by a selector pages the same way.
    let first = pods_a
        .list(&ListParams::default().limit(2).labels("app=paged"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let rv = first.metadata.resource_version.clone().unwrap_or_default();
    let before: BTreeSet<String> = pods_a
        .list(&ListParams::default())
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .items
        .iter()
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    for name in ["p10", "p11"] {
        pods_a
            .delete(name, &DeleteParams::default())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let mut seen: BTreeSet<String> = names(&first.items).into_iter().collect();
    let mut token = first.metadata.continue_.clone();
    while let Some(t) = token.filter(|t| !t.is_empty()) {
        let page = pods_a
            .list(
                &ListParams::default()
                    .limit(2)
                    .labels("app=paged")
                    .continue_token(&t),
            )
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(page.metadata.resource_version.as_deref(), Some(rv.as_str()));
        assert!(page
            .items
            .iter()
            .all(|p| p.metadata.namespace.as_deref() == Some("a")));
        seen.extend(names(&page.items));
        token = page.metadata.continue_.clone();
    }
    assert_eq!(seen, before);
    sim.shutdown().await;
}

#[tokio::test]
async fn a_continue_token_past_compaction_is_410_expired_with_a_token_to_go_on() {
    let sim = sim().await;
    let client = sim.client();
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    for i in 0..6 {
        let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": format!("c{i}")}}))
            .unwrap_or_default();
        cms.create(&PostParams::default(), &cm)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let first = cms
        .list(&ListParams::default().limit(2))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(names(&first.items), ["c0", "c1"]);
    let token = first.metadata.continue_.clone().unwrap_or_default();
    // The history moves on and is compacted past the first page's version.
    cms.delete("c3", &DeleteParams::default())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    sim.store().compact(sim.store().resource_version());

    let s = api_error(
        cms.list(&ListParams::default().limit(2).continue_token(&token))
            .await
            .err()
            .unwrap_or_else(|| panic!("an expired continue token was served")),
    );
    assert_eq!((s.code, s.reason.as_str()), (410, "Expired"));
    assert_eq!(
        s.message,
        "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list."
    );
    let next = s
        .metadata
        .and_then(|m| m.continue_)
        .unwrap_or_else(|| panic!("the 410 carries a token to go on with"));
    // That token continues after c1 in the current state: c3 is gone.
    let rest = cms
        .list(&ListParams::default().limit(10).continue_token(&next))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(names(&rest.items), ["c2", "c4", "c5"]);
    assert_eq!(
        rest.metadata.resource_version,
        Some(sim.store().resource_version().to_string())
    );

    // The watch cache is not the only bound: only so many snapshots live at once, and the
    // oldest one's token expires.
    let first = cms
        .list(&ListParams::default().limit(1))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let oldest = first.metadata.continue_.clone().unwrap_or_default();
    for i in 0..MAX_LIST_SNAPSHOTS {
        // A write between lists gives each list its own snapshot.
        let cm: ConfigMap =
            serde_json::from_value(json!({"metadata": {"name": format!("more{i}")}}))
                .unwrap_or_default();
        cms.create(&PostParams::default(), &cm)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        cms.list(&ListParams::default().limit(1))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    assert_eq!(sim.store().list_snapshots(), MAX_LIST_SNAPSHOTS);
    let s = api_error(
        cms.list(&ListParams::default().limit(1).continue_token(&oldest))
            .await
            .err()
            .unwrap_or_else(|| panic!("an evicted snapshot's token was served")),
    );
    assert_eq!((s.code, s.reason.as_str()), (410, "Expired"));

    // Tokens are validated as a real server validates them.
    let s = api_error(
        cms.list(&ListParams::default().continue_token("not-a-token"))
            .await
            .err()
            .unwrap_or_else(|| panic!("garbage accepted")),
    );
    assert_eq!(s.code, 400);
    assert!(
        s.message.starts_with("invalid continue token: "),
        "{}",
        s.message
    );
    sim.shutdown().await;
}
