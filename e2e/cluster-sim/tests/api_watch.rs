//! Watch semantics against kube-rs: list-then-watch, resume after the server cuts a watch,
//! `410 Gone` recovered by a reflector, bookmarks, and per-watch filtering.

use cluster_sim::{FaultConfig, Sim, SimConfig};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, PostParams, WatchEvent, WatchParams};
use kube::runtime::{reflector, watcher, WatchStreamExt};
use serde_json::json;
use std::time::Duration;

fn cm(name: &str) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name, "labels": {"app": "w"}}}))
        .unwrap_or_default()
}

async fn eventually<F: FnMut() -> bool>(mut f: F, what: &str) {
    for _ in 0..250 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting until {what}");
}

#[tokio::test]
async fn watch_from_a_list_version_sees_later_changes_then_bookmarks_and_times_out() {
    let sim = Sim::start(SimConfig::default())
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let cms: Api<ConfigMap> = Api::default_namespaced(sim.client());
    cms.create(&PostParams::default(), &cm("before"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let list = cms
        .list(&Default::default())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let rv = list.metadata.resource_version.clone().unwrap_or_default();
    let stream = cms
        .watch(&WatchParams::default().timeout(2), &rv)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    cms.create(&PostParams::default(), &cm("after"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let events: Vec<WatchEvent<ConfigMap>> =
        tokio::time::timeout(Duration::from_secs(10), stream.try_collect())
            .await
            .unwrap_or_else(|_| panic!("the watch did not end at its timeoutSeconds"))
            .unwrap_or_else(|e| panic!("{e}"));
    let added: Vec<String> = events
        .iter()
        .filter_map(|e| match e {
            WatchEvent::Added(c) => c.metadata.name.clone(),
            _ => None,
        })
        .collect();
    assert_eq!(
        added,
        vec!["after".to_string()],
        "only changes after the list's version"
    );
    assert!(
        matches!(events.last(), Some(WatchEvent::Bookmark(_))),
        "a bookmark ends a timed-out watch"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn a_watcher_resumes_after_cuts_and_misses_nothing() {
    let faults = FaultConfig {
        watch_cut_after_events: Some(2),
        ..Default::default()
    };
    let sim = Sim::start(SimConfig {
        faults,
        ..Default::default()
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));
    let cms: Api<ConfigMap> = Api::default_namespaced(sim.client());
    let (reader, writer) = reflector::store::<ConfigMap>();
    let stream = reflector(
        writer,
        watcher(cms.clone(), watcher::Config::default().labels("app=w")),
    )
    .applied_objects()
    .boxed();
    let task = tokio::spawn(async move {
        let mut s = stream;
        while s.next().await.is_some() {}
    });
    for i in 0..10 {
        cms.create(&PostParams::default(), &cm(&format!("c{i}")))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    eventually(
        || reader.state().len() == 10,
        "the reflector holds all 10 ConfigMaps despite watches cut every 2 events",
    )
    .await;
    let watches = sim.metrics().request_count("watch", "configmaps");
    assert!(
        watches >= 3,
        "the cuts forced re-watches (saw {watches} watch requests)"
    );
    task.abort();
    sim.shutdown().await;
}

#[tokio::test]
async fn a_watch_from_a_compacted_version_gets_410_expired() {
    let sim = Sim::start(SimConfig::default())
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let cms: Api<ConfigMap> = Api::default_namespaced(sim.client());
    cms.create(&PostParams::default(), &cm("a"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let old_rv = sim.store().resource_version();
    cms.create(&PostParams::default(), &cm("b"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    sim.store().compact(sim.store().resource_version());

    // A raw watch from the compacted version gets an ERROR event with a 410 Status.
    let mut stream = cms
        .watch(&WatchParams::default().timeout(5), &old_rv.to_string())
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .boxed();
    match stream.next().await {
        Some(Ok(WatchEvent::Error(e))) => assert_eq!((e.code, e.reason.as_str()), (410, "Expired")),
        other => panic!("expected a 410 ERROR event, got {other:?}"),
    }

    sim.shutdown().await;
}

#[tokio::test]
async fn a_reflector_whose_resume_version_is_compacted_relists() {
    // Every watch ends after one event, so the reflector resumes often.
    let faults = FaultConfig {
        watch_cut_after_events: Some(1),
        ..Default::default()
    };
    let sim = Sim::start(SimConfig {
        faults,
        ..Default::default()
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));
    let cms: Api<ConfigMap> = Api::default_namespaced(sim.client());
    let (reader, writer) = reflector::store::<ConfigMap>();
    let task = tokio::spawn(
        reflector(
            writer,
            watcher(cms.clone(), watcher::Config::default().labels("app=w")),
        )
        .for_each(|_| async {}),
    );
    cms.create(&PostParams::default(), &cm("a"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    eventually(
        || reader.state().len() == 1,
        "the reflector has the first object",
    )
    .await;
    let lists_before = sim.metrics().request_count("list", "configmaps");
    // Three writes and a compaction, faster than the client can re-watch: the open watch
    // delivers the first and ends; resuming from it is 410 Gone.
    let key = cluster_sim::store::ResourceKey::new("", "configmaps");
    for i in 0..3 {
        let mut obj = serde_json::to_value(cm(&format!("late{i}"))).unwrap_or_default();
        obj["metadata"]["namespace"] = json!("default");
        sim.store()
            .create(&key, obj)
            .unwrap_or_else(|e| panic!("{e}"));
    }
    sim.store().compact(sim.store().resource_version());
    eventually(
        || reader.state().len() == 4,
        "the reflector sees every object after the 410",
    )
    .await;
    let lists_after = sim.metrics().request_count("list", "configmaps");
    assert!(
        lists_after > lists_before,
        "the reflector relisted after 410 ({lists_before} -> {lists_after} lists)"
    );
    task.abort();
    sim.shutdown().await;
}

#[tokio::test]
async fn watches_filter_by_namespace_and_label() {
    let sim = Sim::start(SimConfig::default())
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let client = sim.client();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let other: Api<ConfigMap> = Api::namespaced(client.clone(), "kube-system");
    let rv = sim.store().resource_version().to_string();
    let stream = cms
        .watch(&WatchParams::default().labels("app=w").timeout(1), &rv)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    other
        .create(&PostParams::default(), &cm("elsewhere"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let unlabelled: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "plain"}})).unwrap_or_default();
    cms.create(&PostParams::default(), &unlabelled)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    cms.create(&PostParams::default(), &cm("match"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let names: Vec<String> = stream
        .try_filter_map(|e| async move {
            Ok(match e {
                WatchEvent::Added(c) => c.metadata.name,
                _ => None,
            })
        })
        .try_collect()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(names, vec!["match".to_string()]);
    sim.shutdown().await;
}

#[tokio::test]
async fn streaming_lists_end_their_initial_events_with_the_annotated_bookmark() {
    let sim = Sim::start(SimConfig::default())
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let cms: Api<ConfigMap> = Api::default_namespaced(sim.client());
    for name in ["s1", "s2"] {
        cms.create(&PostParams::default(), &cm(name))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let mut events = watcher(
        cms.clone(),
        watcher::Config::default().labels("app=w").streaming_lists(),
    )
    .boxed();
    let mut initial = Vec::new();
    loop {
        let ev = tokio::time::timeout(Duration::from_secs(10), events.next())
            .await
            .unwrap_or_else(|_| panic!("no InitDone: the initial-events-end bookmark never came"));
        match ev {
            Some(Ok(watcher::Event::InitApply(c))) => {
                initial.push(c.metadata.name.unwrap_or_default())
            }
            Some(Ok(watcher::Event::InitDone)) => break,
            Some(Ok(_)) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    initial.sort();
    assert_eq!(initial, vec!["s1".to_string(), "s2".to_string()]);
    sim.shutdown().await;
}

#[tokio::test]
async fn an_object_leaving_a_label_selector_is_deleted_for_that_watch() {
    let sim = Sim::start(SimConfig::default())
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let cms: Api<ConfigMap> = Api::default_namespaced(sim.client());
    let rv = sim.store().resource_version().to_string();
    let stream = cms
        .watch(&WatchParams::default().labels("app=w").timeout(1), &rv)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let plain: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "moving"}})).unwrap_or_default();
    cms.create(&PostParams::default(), &plain)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let pp = kube::api::PatchParams::default();
    let label =
        |v: serde_json::Value| kube::api::Patch::Merge(json!({"metadata": {"labels": {"app": v}}}));
    cms.patch("moving", &pp, &label(json!("w")))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    cms.patch("moving", &pp, &label(json!("other")))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let kinds: Vec<&str> = stream
        .try_collect::<Vec<_>>()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .iter()
        .filter_map(|e| match e {
            WatchEvent::Added(_) => Some("ADDED"),
            WatchEvent::Modified(_) => Some("MODIFIED"),
            WatchEvent::Deleted(_) => Some("DELETED"),
            _ => None,
        })
        .collect();
    assert_eq!(
        kinds,
        vec!["ADDED", "DELETED"],
        "entering the selector is ADDED, leaving it DELETED"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn metadata_only_lists_and_watches() {
    let sim = Sim::start(SimConfig::default())
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let cms: Api<ConfigMap> = Api::default_namespaced(sim.client());
    let mut c = cm("meta");
    c.data = Some([("big".to_string(), "x".repeat(1000))].into());
    cms.create(&PostParams::default(), &c)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let list = cms
        .list_metadata(&Default::default())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(list.items.len(), 1);
    assert_eq!(list.items[0].metadata.name.as_deref(), Some("meta"));
    assert_eq!(list.types.kind, "PartialObjectMetadataList");
    let rv = list.metadata.resource_version.clone().unwrap_or_default();
    let stream = cms
        .watch_metadata(&WatchParams::default().timeout(1), &rv)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    cms.delete("meta", &Default::default())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let events: Vec<_> = stream.try_collect().await.unwrap_or_else(|e| panic!("{e}"));
    assert!(events.iter().any(
        |e| matches!(e, WatchEvent::Deleted(m) if m.metadata.name.as_deref() == Some("meta"))
    ));
    sim.shutdown().await;
}
