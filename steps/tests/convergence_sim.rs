//! The shared convergence code against the simulator's demo topology: listing meshed pods
//! (paged), judging their bundles, and probing their proxies directly and through the API
//! server's port-forward.

use cluster_sim::mesh::{Durations, Topology};
use cluster_sim::{Sim, SimConfig};
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use kube::api::{Api, ListParams};
use std::time::Duration;
use trust_rotation_steps::convergence::{
    bundle_convergence, cert_convergence, cert_state, CertState,
};
use trust_rotation_steps::observe::{list_meshed_pods, meshed_selector, LIST_PAGE_SIZE};
use trust_rotation_steps::pki::parse_pem_certificate;
use trust_rotation_steps::probe::{probe_pods, ProbeConfig, ProbeMode, ProbeOutcome};

/// The simulator's demo topology, fast.
async fn demo() -> Sim {
    Sim::start(SimConfig {
        topology: Topology::Demo,
        durations: Durations::fast(),
        ..SimConfig::default()
    })
    .await
    .expect("demo starts")
}

async fn issuer(client: &kube::Client) -> trust_rotation_steps::pki::Certificate {
    let s = Api::<Secret>::namespaced(client.clone(), "linkerd")
        .get("linkerd-identity-issuer")
        .await
        .unwrap();
    let crt = s.data.unwrap().remove("tls.crt").unwrap();
    parse_pem_certificate(std::str::from_utf8(&crt.0).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_pods_are_observed_converged_and_probed_both_ways() {
    let sim = demo().await;
    let client = sim.client();
    let pods = list_meshed_pods(&client, "linkerd").await.expect("list");
    assert_eq!(
        pods.len(),
        7,
        "3 control-plane + 4 emojivoto pods: {pods:#?}"
    );
    assert_eq!(pods.iter().filter(|p| p.control_plane).count(), 3);
    assert!(pods.iter().all(|p| p.has_proxy && p.ip.is_some()));
    let web = pods
        .iter()
        .find(|p| p.pod.name.starts_with("web-"))
        .expect("web pod");
    assert_eq!(web.owner.as_deref(), Some("deployment/web"));
    assert_eq!(web.service_account, "web");

    let cm = Api::<ConfigMap>::namespaced(client.clone(), "linkerd")
        .get("linkerd-identity-trust-roots")
        .await
        .unwrap();
    let bundle = cm.data.unwrap().remove("ca-bundle.crt").unwrap();
    let t = bundle_convergence(&pods, &bundle);
    assert_eq!((t.converged, t.target), (4, 4), "{t:?}");
    let t = bundle_convergence(&pods, &format!("{bundle}\n# another bundle"));
    assert_eq!((t.converged, t.target), (0, 4));

    let active = issuer(&client).await;
    for mode in [ProbeMode::Direct, ProbeMode::PortForward] {
        let cfg = ProbeConfig {
            mode,
            concurrency: 3,
            timeout: Duration::from_secs(5),
            trust_domain: "cluster.local".into(),
            linkerd_ns: "linkerd".into(),
        };
        let workloads: Vec<_> = pods.iter().filter(|p| p.is_workload()).cloned().collect();
        let judge_by = active.clone();
        let results = probe_pods(
            &client,
            workloads,
            &cfg,
            move |o| (cert_state(&o, &judge_by), o),
            |_, _| {},
        )
        .await;
        for (p, (_, o)) in &results {
            assert!(
                matches!(o, ProbeOutcome::Chain(c) if !c.is_empty()),
                "{mode}: {} {o:?}",
                p.pod
            );
        }
        let judged: Vec<_> = results.into_iter().map(|(p, (s, _))| (p, s)).collect();
        let t = cert_convergence(&judged);
        assert_eq!((t.converged, t.target), (4, 4), "{mode}: {t:?}");
    }

    // The identity pods' own proxies answer too, with a certificate from the issuer their
    // local controller signs with: AwaitIssuer asks them when start times and Events cannot
    // tell.
    let identity = trust_rotation_steps::read::deployment_since(
        &client,
        "linkerd",
        "linkerd-identity",
        jiff::Timestamp::now(),
    )
    .await
    .expect("identity");
    assert_eq!(identity.live_pods.len(), 1, "{:?}", identity.live_pods);
    assert!(identity.live_pods[0].control_plane);
    let cfg = ProbeConfig {
        mode: ProbeMode::Direct,
        concurrency: 3,
        timeout: Duration::from_secs(5),
        trust_domain: "cluster.local".into(),
        linkerd_ns: "linkerd".into(),
    };
    let judge_by = active.clone();
    let results = probe_pods(
        &client,
        identity.live_pods,
        &cfg,
        move |o| cert_state(&o, &judge_by),
        |_, _| {},
    )
    .await;
    assert_eq!(results[0].1, CertState::Active, "{:?}", results[0].0.pod);

    // A pod that does not exist (any more) is unreachable through port-forward, not a hang.
    let mut gone = pods.iter().find(|p| p.is_workload()).unwrap().clone();
    gone.pod.name = "gone-0".into();
    gone.ip = None;
    let cfg = ProbeConfig {
        mode: ProbeMode::PortForward,
        concurrency: 1,
        timeout: Duration::from_secs(5),
        trust_domain: "cluster.local".into(),
        linkerd_ns: "linkerd".into(),
    };
    let results = probe_pods(&client, vec![gone.clone()], &cfg, |o| o, |_, _| {}).await;
    assert!(
        matches!(&results[0].1, ProbeOutcome::Unreachable(_)),
        "{:?}",
        results[0].1
    );
    let judged = vec![(results[0].0.clone(), cert_state(&results[0].1, &active))];
    let t = cert_convergence(&judged);
    assert!(matches!(t.unconverged[0].state, CertState::Unreachable(_)));
    let direct = ProbeConfig {
        mode: ProbeMode::Direct,
        ..cfg
    };
    let results = probe_pods(&client, vec![gone], &direct, |o| o, |_, _| {}).await;
    assert_eq!(
        results[0].1,
        ProbeOutcome::Unreachable("pod has no IP yet".into())
    );
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_follows_continue_tokens_past_one_page() {
    let extra = LIST_PAGE_SIZE as usize + 50;
    let sim = Sim::start(SimConfig {
        topology: Topology::Demo,
        durations: Durations::fast(),
        pods: extra,
        ..SimConfig::default()
    })
    .await
    .expect("scaled demo starts");
    let client = sim.client();
    // One page is not enough: the server hands out a continue token.
    let page = Api::<Pod>::all(client.clone())
        .list_metadata(
            &ListParams::default()
                .labels(&meshed_selector("linkerd"))
                .limit(LIST_PAGE_SIZE),
        )
        .await
        .unwrap();
    assert_eq!(page.items.len(), LIST_PAGE_SIZE as usize);
    assert!(page.metadata.continue_.is_some_and(|c| !c.is_empty()));
    let pods = list_meshed_pods(&client, "linkerd").await.expect("list");
    assert_eq!(pods.len(), extra + 7);
    let mut names: Vec<String> = pods.iter().map(|p| p.pod.to_string()).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), extra + 7, "no pod twice");
    sim.shutdown().await;
}

/// A pod's IP handed to a pod of another identity (the pod list the operator holds is a
/// moment old, an endpoint is stale): the proxy that answers presents a certificate for its
/// own identity, and the probe calls that invalid, never evidence that the pod converged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ip_reused_by_a_pod_of_another_identity_is_never_taken_for_the_old_pod() {
    let sim = demo().await;
    let client = sim.client();
    let active = issuer(&client).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "emojivoto");
    let stale = list_meshed_pods(&client, "linkerd")
        .await
        .expect("list")
        .into_iter()
        .find(|p| p.pod.name.starts_with("web-"))
        .expect("a web pod");
    let ip = stale.ip.clone().expect("an IP");
    let cfg = ProbeConfig {
        mode: ProbeMode::Direct,
        concurrency: 1,
        timeout: Duration::from_secs(5),
        trust_domain: "cluster.local".into(),
        linkerd_ns: "linkerd".into(),
    };
    let before = probe_pods(&client, vec![stale.clone()], &cfg, |o| o, |_, _| {}).await;
    assert_eq!(cert_state(&before[0].1, &active), CertState::Active);

    // The web pod goes; a bare pod of the voting service account gets its address.
    pods.delete(
        &stale.pod.name,
        &kube::api::DeleteParams::default().grace_period(0),
    )
    .await
    .expect("delete");
    let mut voting = pods
        .list(&ListParams::default().labels("linkerd.io/proxy-deployment=voting"))
        .await
        .expect("pods")
        .items
        .remove(0);
    voting.metadata = kube::api::ObjectMeta {
        name: Some("reused-ip".into()),
        labels: voting.metadata.labels.map(|mut l| {
            l.retain(|k, _| !k.starts_with("linkerd.io/proxy-") && k != "pod-template-hash");
            l
        }),
        annotations: voting.metadata.annotations.map(|mut a| {
            a.insert(
                "cni.projectcalico.org/ipAddrs".into(),
                format!("[\"{ip}\"]"),
            );
            a
        }),
        ..Default::default()
    };
    if let Some(spec) = voting.spec.as_mut() {
        spec.node_name = None;
    }
    voting.status = None;
    // Created as soon as the deleted pod's address is free.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let gone = pods.get_opt(&stale.pod.name).await.expect("get").is_none();
        if gone {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the web pod never went"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    pods.create(&kube::api::PostParams::default(), &voting)
        .await
        .expect("created");
    let reused = loop {
        let now = list_meshed_pods(&client, "linkerd").await.expect("list");
        if let Some(p) = now
            .into_iter()
            .find(|p| p.pod.name == "reused-ip" && p.ready)
        {
            break p;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the pod never started on {ip}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        reused.ip.as_deref(),
        Some(ip.as_str()),
        "the address was reused"
    );

    // Probed as the web pod it was: the proxy there is another identity's and refuses the
    // handshake for the web identity (one that presented its own certificate instead would
    // fail the identity check: probe.rs's unit tests). Invalid, never the web pod converged.
    let after = probe_pods(&client, vec![stale.clone()], &cfg, |o| o, |_, _| {}).await;
    let ProbeOutcome::Rejected(why) = &after[0].1 else {
        panic!(
            "another identity's proxy was not rejected: {:?}",
            after[0].1
        );
    };
    assert!(
        why.contains("refused to answer as web.emojivoto") && why.contains("another pod"),
        "{why}"
    );
    let state = cert_state(&after[0].1, &active);
    assert!(matches!(state, CertState::Invalid(_)), "{state:?}");
    let t = cert_convergence(&[(stale, state)]);
    assert_eq!((t.converged, t.target), (0, 1));
    // The pod that holds the address now answers for itself.
    let own = probe_pods(&client, vec![reused], &cfg, |o| o, |_, _| {}).await;
    assert_eq!(cert_state(&own[0].1, &active), CertState::Active);
    sim.shutdown().await;
}

/// Remembers which pods the step told it to forget.
#[derive(Default)]
struct Forgetful(std::sync::Mutex<Vec<String>>);

impl trust_rotation_steps::snapshot::PodSource for Forgetful {
    fn meshed_pods(&self, _: &str) -> Option<Vec<trust_rotation_steps::observe::MeshedPod>> {
        None
    }
    fn forget_pod(&self, _: &str, pod: &trust_rotation_steps::observe::PodRef) {
        self.0.lock().unwrap().push(pod.to_string());
    }
}

/// A pod view can hold a pod whose deletion it never heard of. Once a step has waited past
/// the stall timeout, it re-reads the pods it waits for before naming them: the one the API
/// server no longer has is dropped (and forgotten by the cache); the live one stays named.
/// Before the stall timeout nothing is re-read, and in a long stall only at the start of each
/// stall-timeout period.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_step_drops_the_pods_the_api_server_no_longer_has() {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use trust_rotation_crds::{
        Phase, RotationRecord, StepRecord, StepState, TrustAnchorRotationSpec,
    };
    use trust_rotation_steps::snapshot::gone_if_stalled;
    use trust_rotation_steps::step::{ProbeSettings, StepContext};
    let sim = demo().await;
    let client = sim.client();
    let mut pods = list_meshed_pods(&client, "linkerd").await.expect("list");
    pods.retain(|p| p.is_workload());
    let mut ghost = pods[0].clone();
    ghost.pod.name = "web-deleted-long-ago".into();
    pods.push(ghost);
    let stale = format!("{}\n# not what any pod carries", "x");
    let tally = bundle_convergence(&pods, &stale);
    assert_eq!(tally.unconverged.len(), pods.len());

    let now = jiff::Timestamp::now();
    let ctx = |quiet_for: i64| {
        let spec = TrustAnchorRotationSpec::default();
        let record = StepRecord {
            name: "AwaitPropagation".into(),
            phase: Phase::PropagatingTrustRoots,
            state: StepState::Waiting,
            attempts: 1,
            started_at: Some(Time(now - jiff::SignedDuration::from_secs(quiet_for))),
            finished_at: None,
            last_progress_time: Some(Time(now - jiff::SignedDuration::from_secs(quiet_for))),
            message: None,
        };
        let rotation = RotationRecord {
            id: "r".into(),
            trigger: "test".into(),
            from_anchor: None,
            to_anchor: None,
            superseded_anchors: vec![],
            started_at: Time(now),
            finished_at: None,
            trace_parent: None,
            issuer_renewal: None,
            approvals: Vec::new(),
        };
        let source = std::sync::Arc::new(Forgetful::default());
        let ctx = StepContext::new(
            client.clone(),
            "cluster".into(),
            spec,
            rotation,
            vec![record],
            now,
            now,
            ProbeSettings::default(),
        )
        .with_pods(Some(source.clone()));
        (ctx, source)
    };
    // Waiting for a minute (stall timeout 5m): nothing is re-read.
    let (fresh, source) = ctx(60);
    let gone = gone_if_stalled(&fresh, "AwaitPropagation", &tally)
        .await
        .expect("read");
    assert!(gone.is_empty() && source.0.lock().unwrap().is_empty());
    // Stalled: the ghost is found gone and forgotten; live pods stay.
    let (stalled, source) = ctx(600);
    let gone = gone_if_stalled(&stalled, "AwaitPropagation", &tally)
        .await
        .expect("read");
    let names: Vec<String> = gone.iter().map(ToString::to_string).collect();
    assert_eq!(names, ["emojivoto/web-deleted-long-ago"]);
    assert_eq!(*source.0.lock().unwrap(), names);
    // Between re-reads of a long stall (two minutes into the second stall period), nothing
    // is read: a stall of hours does not send GETs on every look.
    let (between, source) = ctx(300 + 120);
    let gone = gone_if_stalled(&between, "AwaitPropagation", &tally)
        .await
        .expect("read");
    assert!(gone.is_empty() && source.0.lock().unwrap().is_empty());
    sim.shutdown().await;
}
