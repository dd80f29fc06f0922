//! kube-rs against the simulator's API server: every verb and patch type, the status
//! subresource rules, errors as `Status`, finalizers and garbage collection, CRDs.

use cluster_sim::{Sim, SimConfig};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::core::{DynamicObject, GroupVersionKind};
use kube::discovery::{ApiResource, Discovery};
use serde_json::json;

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

fn cm(name: &str, data: serde_json::Value) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name}, "data": data})).unwrap_or_default()
}

#[tokio::test]
async fn crud_conflicts_and_errors_are_what_a_real_server_answers() {
    let sim = sim().await;
    let client = sim.client();
    namespace(&client, "app").await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "app");

    let created = cms
        .create(&PostParams::default(), &cm("one", json!({"a": "1"})))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let rv = created
        .metadata
        .resource_version
        .clone()
        .unwrap_or_default();
    assert!(created.metadata.uid.is_some() && created.metadata.creation_timestamp.is_some());

    // Create of an existing name: 409 AlreadyExists.
    let s = api_error(
        cms.create(&PostParams::default(), &cm("one", json!({})))
            .await
            .err()
            .unwrap_or_else(|| panic!("duplicate create succeeded")),
    );
    assert_eq!((s.code, s.reason.as_str()), (409, "AlreadyExists"));
    assert_eq!(s.message, "configmaps \"one\" already exists");

    // Update with the current resourceVersion succeeds and moves it; a stale one is 409 Conflict.
    let mut next = created.clone();
    next.data = Some([("a".to_string(), "2".to_string())].into());
    let updated = cms
        .replace("one", &PostParams::default(), &next)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_ne!(
        updated.metadata.resource_version.as_deref(),
        Some(rv.as_str())
    );
    let s = api_error(
        cms.replace("one", &PostParams::default(), &next)
            .await
            .err()
            .unwrap_or_else(|| panic!("stale update succeeded")),
    );
    assert_eq!((s.code, s.reason.as_str()), (409, "Conflict"));
    assert!(
        s.message.contains("the object has been modified"),
        "{}",
        s.message
    );

    // A no-op update keeps the resourceVersion.
    let same = cms
        .replace("one", &PostParams::default(), &updated)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        same.metadata.resource_version,
        updated.metadata.resource_version
    );

    // 404 NotFound with details, for a missing object.
    let s = api_error(
        cms.get("nope")
            .await
            .err()
            .unwrap_or_else(|| panic!("get of a missing object succeeded")),
    );
    assert_eq!(
        (s.code, s.reason.as_str(), s.message.as_str()),
        (404, "NotFound", "configmaps \"nope\" not found")
    );

    // A namespace that does not exist: 404 for the namespace.
    let s = api_error(
        Api::<ConfigMap>::namespaced(client.clone(), "missing")
            .create(&PostParams::default(), &cm("x", json!({})))
            .await
            .err()
            .unwrap_or_else(|| panic!("create in a missing namespace succeeded")),
    );
    assert_eq!(
        (s.code, s.message.as_str()),
        (404, "namespaces \"missing\" not found")
    );

    // A name that is not DNS-1123: 422 Invalid on metadata.name.
    let s = api_error(
        cms.create(&PostParams::default(), &cm("Bad_Name", json!({})))
            .await
            .err()
            .unwrap_or_else(|| panic!("bad name accepted")),
    );
    assert_eq!((s.code, s.reason.as_str()), (422, "Invalid"));
    assert!(
        s.message
            .starts_with("ConfigMap \"Bad_Name\" is invalid: metadata.name: Invalid value"),
        "{}",
        s.message
    );

    // generateName.
    let gen: ConfigMap =
        serde_json::from_value(json!({"metadata": {"generateName": "gen-"}})).unwrap_or_default();
    let g = cms
        .create(&PostParams::default(), &gen)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(g
        .metadata
        .name
        .as_deref()
        .is_some_and(|n| n.starts_with("gen-") && n.len() == 9));

    // Delete, then it is gone.
    cms.delete("one", &DeleteParams::default())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(cms
        .get_opt("one")
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .is_none());
    sim.shutdown().await;
}

#[tokio::test]
async fn every_patch_type_applies() {
    let sim = sim().await;
    let client = sim.client();
    namespace(&client, "p").await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "p");
    cms.create(&PostParams::default(), &cm("c", json!({"a": "1"})))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let pp = PatchParams::default();

    let merged = cms
        .patch(
            "c",
            &pp,
            &Patch::Merge(json!({"data": {"b": "2", "a": null}})),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        merged.data,
        Some([("b".to_string(), "2".to_string())].into())
    );

    let ops: json_patch::Patch =
        serde_json::from_value(json!([{"op": "add", "path": "/data/c", "value": "3"}]))
            .unwrap_or_else(|e| panic!("{e}"));
    let jp = cms
        .patch("c", &pp, &Patch::Json::<()>(ops))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        jp.data
            .as_ref()
            .and_then(|d| d.get("c"))
            .map(String::as_str),
        Some("3")
    );

    // A JSON patch that does not apply is 422, and changes nothing.
    let bad: json_patch::Patch =
        serde_json::from_value(json!([{"op": "remove", "path": "/data/missing"}]))
            .unwrap_or_else(|e| panic!("{e}"));
    let s = api_error(
        cms.patch("c", &pp, &Patch::Json::<()>(bad))
            .await
            .err()
            .unwrap_or_else(|| panic!("bad JSON patch applied")),
    );
    assert_eq!(s.code, 422);

    // Strategic merge on a Deployment merges containers and env by name.
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), "p");
    let d: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [
            {"name": "app", "image": "a:1", "env": [{"name": "X", "value": "1"}]},
            {"name": "side", "image": "s:1"}
        ]}}}
    })).unwrap_or_else(|e| panic!("{e}"));
    deploys
        .create(&PostParams::default(), &d)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let patched = deploys
        .patch("web", &pp, &Patch::Strategic(json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "env": [{"name": "Y", "value": "2"}]}]}}}})))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let v = serde_json::to_value(&patched).unwrap_or_default();
    let containers = v["spec"]["template"]["spec"]["containers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        containers.len(),
        2,
        "the sidecar survives a strategic merge"
    );
    assert_eq!(
        containers[0]["env"],
        json!([{"name": "X", "value": "1"}, {"name": "Y", "value": "2"}])
    );

    // Server-side apply: creates, then a second manager conflicts on a differing field,
    // then force takes it over.
    let ssa = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa"}, "data": {"k": "1"}});
    cms.patch("ssa", &PatchParams::apply("first"), &Patch::Apply(&ssa))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let other = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa"}, "data": {"k": "2"}});
    let s = api_error(
        cms.patch("ssa", &PatchParams::apply("second"), &Patch::Apply(&other))
            .await
            .err()
            .unwrap_or_else(|| panic!("conflicting apply succeeded")),
    );
    assert_eq!((s.code, s.reason.as_str()), (409, "Conflict"));
    assert_eq!(
        s.message,
        "Apply failed with 1 conflict: conflict with \"first\": .data.k"
    );
    let forced = cms
        .patch(
            "ssa",
            &PatchParams::apply("second").force(),
            &Patch::Apply(&other),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        forced.data.and_then(|d| d.get("k").cloned()).as_deref(),
        Some("2")
    );
    let managers: Vec<String> = forced
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .filter_map(|m| m.manager)
        .collect();
    assert!(managers.contains(&"second".to_string()));
    sim.shutdown().await;
}

#[tokio::test]
async fn status_subresource_rules_and_generation() {
    let sim = sim().await;
    let client = sim.client();
    namespace(&client, "s").await;
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), "s");
    let d: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}}, "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "app", "image": "a:1"}]}}},
        "status": {"replicas": 99}
    })).unwrap_or_else(|e| panic!("{e}"));
    let created = deploys
        .create(&PostParams::default(), &d)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        created.status.and_then(|s| s.replicas),
        None,
        "status is not set on create"
    );
    assert_eq!(created.metadata.generation, Some(1));

    // A status write changes only status, and not generation.
    let st = deploys
        .patch_status(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"replicas": 1}, "spec": {"replicas": 5}})),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(st.status.as_ref().and_then(|s| s.replicas), Some(1));
    assert_eq!(
        st.spec.replicas,
        Some(1),
        "spec is not writable through /status"
    );
    assert_eq!(st.metadata.generation, Some(1));

    // A write to the object leaves status alone; a spec change moves generation.
    let main = deploys
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 3}, "status": {"replicas": 7}})),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(main.status.as_ref().and_then(|s| s.replicas), Some(1));
    assert_eq!(main.metadata.generation, Some(2));
    // Labels alone do not.
    let labelled = deploys
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}})),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(labelled.metadata.generation, Some(2));
    sim.shutdown().await;
}

#[tokio::test]
async fn selectors_and_paging() {
    let sim = sim().await;
    let client = sim.client();
    namespace(&client, "l").await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "l");
    for (name, tier) in [("a", "front"), ("b", "back"), ("c", "front"), ("d", "")] {
        let mut c = cm(name, json!({}));
        if !tier.is_empty() {
            c.metadata.labels = Some([("tier".to_string(), tier.to_string())].into());
        }
        cms.create(&PostParams::default(), &c)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let names = |l: kube::core::ObjectList<ConfigMap>| {
        l.items
            .into_iter()
            .filter_map(|c| c.metadata.name)
            .collect::<Vec<_>>()
    };
    let front = cms
        .list(&ListParams::default().labels("tier=front"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(names(front), vec!["a", "c"]);
    let set = cms
        .list(&ListParams::default().labels("tier in (back, front),tier notin (front)"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(names(set), vec!["b"]);
    let unlabelled = cms
        .list(&ListParams::default().labels("!tier"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(names(unlabelled), vec!["d"]);
    let by_name = cms
        .list(&ListParams::default().fields("metadata.name=c"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(names(by_name), vec!["c"]);

    let p1 = cms
        .list(&ListParams::default().limit(3))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let token = p1.metadata.continue_.clone().unwrap_or_default();
    assert_eq!(p1.metadata.remaining_item_count, Some(1));
    assert_eq!(names(p1), vec!["a", "b", "c"]);
    let p2 = cms
        .list(&ListParams::default().limit(3).continue_token(&token))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(p2.metadata.continue_.as_deref().is_none_or(str::is_empty));
    assert_eq!(names(p2), vec!["d"]);

    let s = api_error(
        cms.list(&ListParams::default().labels("tier in front"))
            .await
            .err()
            .unwrap_or_else(|| panic!("bad selector accepted")),
    );
    assert_eq!(s.code, 400);
    sim.shutdown().await;
}

#[tokio::test]
async fn finalizers_hold_deletion_and_orphans_are_collected() {
    let sim = sim().await;
    let client = sim.client();
    namespace(&client, "g").await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "g");
    let mut held = cm("held", json!({}));
    held.metadata.finalizers = Some(vec!["example.com/hold".to_string()]);
    cms.create(&PostParams::default(), &held)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    cms.delete("held", &DeleteParams::default())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let pending = cms.get("held").await.unwrap_or_else(|e| panic!("{e}"));
    assert!(
        pending.metadata.deletion_timestamp.is_some(),
        "a finalizer keeps the object, marked for deletion"
    );
    cms.patch(
        "held",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        cms.get_opt("held")
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .is_none(),
        "removing the last finalizer deletes"
    );

    let owner = cms
        .create(&PostParams::default(), &cm("owner", json!({})))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut dep = cm("dependent", json!({}));
    dep.metadata.owner_references = Some(vec![
        k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            name: "owner".into(),
            uid: owner.metadata.uid.clone().unwrap_or_default(),
            ..Default::default()
        },
    ]);
    cms.create(&PostParams::default(), &dep)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    cms.delete("owner", &DeleteParams::default())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut gone = false;
    for _ in 0..100 {
        if cms
            .get_opt("dependent")
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .is_none()
        {
            gone = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(
        gone,
        "the dependent of a deleted owner is garbage-collected"
    );

    // Deleting a namespace deletes its contents.
    cms.create(&PostParams::default(), &cm("inside", json!({})))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    Api::<Namespace>::all(client.clone())
        .delete("g", &DeleteParams::default())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut empty = false;
    for _ in 0..100 {
        if cms
            .list(&ListParams::default())
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .items
            .is_empty()
        {
            empty = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(empty, "a deleted namespace's objects are deleted");
    sim.shutdown().await;
}

#[tokio::test]
async fn creating_a_crd_serves_its_kind_with_scope_status_and_short_names() {
    let sim = sim().await;
    let client = sim.client();
    let crd_yaml = include_str!("../../../crds/trust.linkerd.io_trustanchorrotations.yaml");
    let crd: k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition =
        serde_yaml::from_str(crd_yaml).unwrap_or_else(|e| panic!("{e}"));
    Api::all(client.clone())
        .create(&PostParams::default(), &crd)
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    let discovery = Discovery::new(client.clone())
        .run()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let gvk = GroupVersionKind::gvk("trust.linkerd.io", "v1alpha1", "TrustAnchorRotation");
    let (ar, caps) = discovery
        .resolve_gvk(&gvk)
        .unwrap_or_else(|| panic!("the CRD's kind is discovered"));
    assert_eq!(caps.scope, kube::discovery::Scope::Cluster);
    assert_eq!(ar.plural, "trustanchorrotations");
    // cert-manager's CRDs are served from the start.
    assert!(discovery
        .resolve_gvk(&GroupVersionKind::gvk(
            "cert-manager.io",
            "v1",
            "Certificate"
        ))
        .is_some());

    let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
    let obj: DynamicObject = serde_json::from_value(json!({"apiVersion": "trust.linkerd.io/v1alpha1", "kind": "TrustAnchorRotation", "metadata": {"name": "cluster"}, "spec": {}}))
        .unwrap_or_else(|e| panic!("{e}"));
    let created = api
        .create(&PostParams::default(), &obj)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // Schema defaults are applied, as a real server does.
    assert!(
        created.data["spec"]
            .as_object()
            .is_some_and(|m| !m.is_empty()),
        "spec defaults: {}",
        created.data["spec"]
    );
    // The status schema is enforced on /status writes.
    let s = api_error(
        api.patch_status(
            "cluster",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Pending"}})),
        )
        .await
        .err()
        .unwrap_or_else(|| panic!("a phase outside the enum was accepted")),
    );
    assert_eq!((s.code, s.reason.as_str()), (422, "Invalid"));
    let st = api
        .patch_status(
            "cluster",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Synced"}})),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(st.data["status"]["phase"], "Synced");
    let main = api
        .patch(
            "cluster",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "RefreshingControlPlane"}})),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        main.data["status"]["phase"], "Synced",
        "status is only written through /status"
    );

    // Strategic merge is refused for custom resources, as on a real server.
    let s = api_error(
        api.patch(
            "cluster",
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {}})),
        )
        .await
        .err()
        .unwrap_or_else(|| panic!("strategic patch on a CR accepted")),
    );
    assert_eq!(s.code, 415);

    // Unknown kinds are 404 with the real message.
    let bogus = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("nope.example.com", "v1", "Nope"),
        "nopes",
    );
    let s = api_error(
        Api::<DynamicObject>::all_with(client.clone(), &bogus)
            .list(&ListParams::default())
            .await
            .err()
            .unwrap_or_else(|| panic!("unknown kind listed")),
    );
    assert_eq!(
        (s.code, s.message.as_str()),
        (404, "the server could not find the requested resource")
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn malformed_bodies_are_400_and_pods_delete_returns_the_pod() {
    let sim = sim().await;
    let client = sim.client();
    let req = http::Request::post("/api/v1/namespaces/default/configmaps")
        .header("content-type", "application/json")
        .body(b"{not json".to_vec())
        .unwrap_or_else(|e| panic!("{e}"));
    let s = api_error(
        client
            .request::<ConfigMap>(req)
            .await
            .err()
            .unwrap_or_else(|| panic!("garbage accepted")),
    );
    assert_eq!((s.code, s.reason.as_str()), (400, "BadRequest"));
    let req = http::Request::post("/api/v1/namespaces/default/configmaps")
        .header("content-type", "application/json")
        .body(br#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"x"}}"#.to_vec())
        .unwrap_or_else(|e| panic!("{e}"));
    let s = api_error(
        client
            .request::<ConfigMap>(req)
            .await
            .err()
            .unwrap_or_else(|| panic!("wrong kind accepted")),
    );
    assert_eq!(s.code, 400);

    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let p: Pod = serde_json::from_value(
        json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i"}]}}),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    pods.create(&PostParams::default(), &p)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let deleted = pods
        .delete("p", &DeleteParams::default())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(deleted.is_left(), "deleting a pod answers with the pod");
    sim.shutdown().await;
}

#[tokio::test]
async fn a_uid_in_a_write_is_a_precondition() {
    let sim = sim().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(sim.client());
    let first = cms
        .create(&PostParams::default(), &cm("u", json!({})))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let old_uid = first.metadata.uid.clone().unwrap_or_default();
    cms.delete("u", &DeleteParams::default())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    cms.create(&PostParams::default(), &cm("u", json!({})))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let stale = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "u", "uid": old_uid}, "data": {"k": "v"}});
    for (what, result) in [
        (
            "merge patch",
            cms.patch("u", &PatchParams::default(), &Patch::Merge(&stale))
                .await,
        ),
        (
            "server-side apply",
            cms.patch("u", &PatchParams::apply("m").force(), &Patch::Apply(&stale))
                .await,
        ),
    ] {
        let s = api_error(
            result
                .err()
                .unwrap_or_else(|| panic!("{what} with a stale uid succeeded")),
        );
        assert_eq!(s.code, 409, "{what}");
        assert!(
            s.message
                .contains("Precondition failed: UID in precondition"),
            "{what}: {}",
            s.message
        );
    }
    let current = cms.get("u").await.unwrap_or_else(|e| panic!("{e}"));
    assert!(
        current.data.unwrap_or_default().is_empty(),
        "nothing was written"
    );
    let fresh = json!({"metadata": {"uid": current.metadata.uid}, "data": {"k": "v"}});
    cms.patch("u", &PatchParams::default(), &Patch::Merge(&fresh))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    sim.shutdown().await;
}
