//! The demo topology: the guide's PKI, the control plane and emojivoto converge; meshed
//! pods carry what the injector writes and their proxies serve the workload chain.

mod mesh_common;

use cluster_sim::mesh::Durations;
use mesh_common::*;
use std::collections::HashSet;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_converges_with_meshed_pods_serving_their_chain() {
    let (store, mesh) = demo(Durations::fast()).await;

    // cert-manager issued the guide's PKI.
    for (ns, name) in [
        ("cert-manager", "linkerd-trust-anchor"),
        ("linkerd", "linkerd-identity-issuer"),
    ] {
        let c = store
            .get(&k("cert-manager.io", "certificates"), Some(ns), name)
            .expect("certificate");
        assert_eq!(c["status"]["revision"], 1, "{ns}/{name}");
        assert!(c["status"]["renewalTime"].is_string());
        let ready = c["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "Ready")
            .unwrap()
            .clone();
        assert_eq!(ready["status"], "True");
    }
    let anchor = secret_value(&store, "cert-manager", "linkerd-trust-anchor", "tls.crt").unwrap();
    assert_eq!(
        secret_value(&store, "cert-manager", "linkerd-trust-anchor", "ca.crt").unwrap(),
        anchor
    );
    let issuer_crt = secret_value(&store, "linkerd", "linkerd-identity-issuer", "tls.crt").unwrap();
    assert_eq!(
        secret_value(&store, "linkerd", "linkerd-identity-issuer", "ca.crt").unwrap(),
        anchor,
        "ca.crt is the root that signed the issuer"
    );
    assert_eq!(
        bundle(&store),
        anchor,
        "the trust roots are seeded from the anchor"
    );

    // cert-manager runs unmeshed; every other pod is meshed, Ready, on a unique loopback IP.
    let (all, _) = store.list(&k("", "pods"), None);
    let (cert_manager, pods): (Vec<_>, Vec<_>) = all
        .into_iter()
        .partition(|p| p["metadata"]["namespace"] == "cert-manager");
    assert_eq!(cert_manager.len(), 3, "controller, cainjector, webhook");
    for p in &cert_manager {
        assert!(p["metadata"]["labels"]["linkerd.io/control-plane-ns"].is_null());
        assert_eq!(
            p["spec"]["containers"].as_array().unwrap().len(),
            1,
            "not injected"
        );
    }
    assert_eq!(pods.len(), 7, "3 control-plane pods and 4 emojivoto pods");
    let mut ips = HashSet::new();
    for p in &pods {
        let ip = p["status"]["podIP"].as_str().unwrap();
        assert!(
            ip.starts_with("127.") && !ip.starts_with("127.0.0."),
            "{ip}"
        );
        assert!(ips.insert(ip.to_string()), "duplicate pod IP {ip}");
        assert_eq!(
            p["metadata"]["labels"]["linkerd.io/control-plane-ns"], "linkerd",
            "{p:#}"
        );
        let ready = p["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True");
        assert!(ready, "pod {} not Ready", p["metadata"]["name"]);
        let proxy = p["status"]["containerStatuses"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "linkerd-proxy")
            .unwrap()
            .clone();
        assert!(proxy["state"]["running"]["startedAt"].is_string());
    }

    // Injected pods: inline anchors (trimmed + newline), the exact-bytes hash, the labels.
    let web = pods_of(&store, "emojivoto", "web").pop().expect("web pod");
    assert_eq!(
        env_value(&web, "LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS").unwrap(),
        format!("{}\n", anchor.trim())
    );
    assert_eq!(
        web["metadata"]["annotations"]["linkerd.io/trust-root-sha256"],
        sha256_hex(anchor.as_bytes())
    );
    assert_eq!(
        web["metadata"]["labels"]["linkerd.io/proxy-deployment"],
        "web"
    );
    assert_eq!(
        web["metadata"]["labels"]["linkerd.io/workload-ns"],
        "emojivoto"
    );

    // The admin port: TLS with the pod's identity presents [leaf, issuer].
    let ip = web["status"]["podIP"].as_str().unwrap().to_string();
    let chain = probe_chain(
        &ip,
        "web.emojivoto.serviceaccount.identity.linkerd.cluster.local",
    )
    .await
    .expect("TLS probe");
    assert_eq!(chain.len(), 2);
    assert_eq!(
        chain[1],
        pem_ders(&issuer_crt)[0],
        "the second certificate is the current issuer"
    );
    assert!(
        probe_chain(
            &ip,
            "someone-else.emojivoto.serviceaccount.identity.linkerd.cluster.local"
        )
        .await
        .is_err(),
        "a wrong SNI gets no certificate"
    );
    // ...and plain HTTP on the same port.
    let (code, _) = admin_get(&ip, "/ready").await.unwrap();
    assert_eq!(code, 200);
    let (_, metrics) = admin_get(&ip, "/metrics").await.unwrap();
    assert!(
        metrics.contains("control_identity_cert_expiration_timestamp_seconds "),
        "{metrics}"
    );
    assert!(
        metrics.contains("control_identity_cert_refreshes_total{result=\"ok\"} "),
        "{metrics}"
    );
    let (_, env) = admin_get(&ip, "/env.json?LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS")
        .await
        .unwrap();
    let env: serde_json::Value = serde_json::from_str(&env).unwrap();
    assert_eq!(
        env["LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS"]
            .as_str()
            .unwrap(),
        format!("{}\n", anchor.trim())
    );

    // The oracle is happy and says so on /metrics.
    let r = mesh.oracle().report();
    assert_eq!(r.current.ratio, 1.0);
    assert_eq!(r.current.certified_pods, 7);
    assert_eq!(r.current.pods_without_valid_certificate, 0);
    assert!(mesh
        .metrics_text()
        .contains("cluster_sim_mtls_ok_ratio 1\n"));
    mesh.shutdown().await;
}

/// Nothing hot-reloads the bundle: a proxy holds what it read at start, whether inline
/// (injected) or from `configMapKeyRef` (control plane), until its pod restarts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxies_keep_the_bundle_they_started_with_until_restarted() {
    let (store, mesh) = demo(Durations::fast()).await;
    let old = bundle(&store);
    let new = format!("{old}{old}"); // any change of bytes will do
    set_bundle(&store, &new);
    let anchors = |ns: &'static str, label: &'static str, value: &'static str| {
        let store = store.clone();
        async move {
            let p = store
                .list(&k("", "pods"), Some(ns))
                .0
                .into_iter()
                .find(|p| p["metadata"]["labels"][label] == value)
                .expect("pod");
            let ip = p["status"]["podIP"].as_str().unwrap().to_string();
            let (_, body) = admin_get(&ip, "/env.json?LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS")
                .await
                .unwrap();
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            v["LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS"]
                .as_str()
                .unwrap()
                .to_string()
        }
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        anchors(
            "linkerd",
            "linkerd.io/control-plane-component",
            "destination"
        )
        .await,
        old
    );
    assert_eq!(anchors("emojivoto", "app", "web").await.trim(), old.trim());

    restart_and_wait(
        &store,
        &[("linkerd", "linkerd-destination"), ("emojivoto", "web")],
    )
    .await;
    assert_eq!(
        anchors(
            "linkerd",
            "linkerd.io/control-plane-component",
            "destination"
        )
        .await,
        new
    );
    assert_eq!(
        anchors("emojivoto", "app", "web").await,
        format!("{}\n", new.trim())
    );
    // Not restarted: still the old one.
    assert_eq!(
        anchors("linkerd", "linkerd.io/control-plane-component", "identity").await,
        old
    );
    assert_eq!(
        anchors("emojivoto", "app", "voting").await.trim(),
        old.trim()
    );
    mesh.shutdown().await;
}

/// `--proxy-admin-latency`: every connection to a proxy's admin port waits out the round trip
/// before it is answered (TLS or plain), and connections wait side by side, as on a network.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_admin_latency_delays_every_connection_but_not_in_turn() {
    let latency = Duration::from_millis(300);
    let (store, mesh) = demo(Durations {
        proxy_admin_latency: latency,
        ..Durations::fast()
    })
    .await;
    let web = store
        .list(&k("", "pods"), Some("emojivoto"))
        .0
        .into_iter()
        .find(|p| p["metadata"]["labels"]["app"] == "web")
        .expect("the web pod");
    let ip = web["status"]["podIP"].as_str().unwrap().to_string();
    let sni = "web.emojivoto.serviceaccount.identity.linkerd.cluster.local";

    let t = std::time::Instant::now();
    let chain = probe_chain(&ip, sni).await.expect("TLS probe");
    assert_eq!(chain.len(), 2, "the probe still gets the chain");
    assert!(
        t.elapsed() >= latency,
        "a TLS probe waited {:?}",
        t.elapsed()
    );
    let t = std::time::Instant::now();
    assert_eq!(admin_get(&ip, "/ready").await.unwrap().0, 200);
    assert!(
        t.elapsed() >= latency,
        "plain HTTP waited {:?}",
        t.elapsed()
    );

    // Ten probes at once take about one round trip, not ten.
    let t = std::time::Instant::now();
    let probes = (0..10).map(|_| probe_chain(&ip, sni));
    for r in futures::future::join_all(probes).await {
        r.expect("TLS probe");
    }
    assert!(
        t.elapsed() < latency * 5,
        "ten concurrent probes took {:?}",
        t.elapsed()
    );
    mesh.shutdown().await;
}
