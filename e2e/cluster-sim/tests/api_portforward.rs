//! Pod port-forward through the API server, exactly as kube-rs `Api::<Pod>::portforward`
//! speaks it, to a TCP server on the pod's (loopback) IP.

use cluster_sim::{Sim, SimConfig};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// An echo server on `ip`, answering each connection with a greeting and then echoing.
async fn echo_server(ip: &str) -> u16 {
    let listener = TcpListener::bind((ip, 0))
        .await
        .unwrap_or_else(|e| panic!("binding {ip}: {e}"));
    let port = listener
        .local_addr()
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("{e}"));
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let _ = s.write_all(b"hello\n").await;
                let mut buf = [0u8; 1024];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    port
}

/// Creates a pod and returns its IP: the one the simulated kubelet gives it, or, when no
/// kubelet runs, `fallback`, written to its status.
async fn pod_ip(pods: &Api<Pod>, name: &str, fallback: &str) -> String {
    let p: Pod = serde_json::from_value(
        json!({"metadata": {"name": name}, "spec": {"containers": [{"name": "c", "image": "i"}]}}),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    pods.create(&PostParams::default(), &p)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    for _ in 0..100 {
        let pod = pods.get(name).await.unwrap_or_else(|e| panic!("{e}"));
        if let Some(ip) = pod.status.and_then(|s| s.pod_ip) {
            return ip;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    pods.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"podIP": fallback, "phase": "Running"}})),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    fallback.to_string()
}

#[tokio::test]
async fn portforward_pipes_to_the_pod_ip_both_ways() {
    let sim = Sim::start(SimConfig::default())
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let pods: Api<Pod> = Api::default_namespaced(sim.client());
    let ip = pod_ip(&pods, "echo", "127.0.0.42").await;
    let port = echo_server(&ip).await;

    let mut pf = pods
        .portforward("echo", &[port])
        .await
        .unwrap_or_else(|e| panic!("port-forward: {e}"));
    let mut stream = pf
        .take_stream(port)
        .unwrap_or_else(|| panic!("no stream for port {port}"));
    let mut greeting = [0u8; 6];
    stream
        .read_exact(&mut greeting)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(&greeting, b"hello\n");
    let payload: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    stream
        .write_all(&payload)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut back = vec![0u8; payload.len()];
    stream
        .read_exact(&mut back)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        back, payload,
        "bytes come back unchanged through the WebSocket channels"
    );
    drop(stream);
    pf.abort();
    sim.shutdown().await;
}

#[tokio::test]
async fn portforward_reports_a_refused_port_on_the_error_channel() {
    let sim = Sim::start(SimConfig::default())
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let pods: Api<Pod> = Api::default_namespaced(sim.client());
    let ip = pod_ip(&pods, "closed", "127.0.0.43").await;
    // Bind then drop, so nothing listens there.
    let port = {
        let l = TcpListener::bind((ip.as_str(), 0))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        l.local_addr()
            .map(|a| a.port())
            .unwrap_or_else(|e| panic!("{e}"))
    };
    let mut pf = pods
        .portforward("closed", &[port])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let err = pf
        .take_error(port)
        .unwrap_or_else(|| panic!("no error channel"));
    let message = tokio::time::timeout(std::time::Duration::from_secs(5), err)
        .await
        .unwrap_or_else(|_| panic!("no error reported"));
    assert!(
        message.is_some_and(|m| m.contains(&port.to_string())),
        "the error names the port"
    );
    pf.abort();

    // A pod that does not exist cannot be forwarded to.
    match pods.portforward("missing", &[80]).await {
        Err(kube::Error::Api(s)) => assert_eq!(s.code, 404),
        other => panic!("expected 404, got {:?}", other.map(|_| ())),
    }
    sim.shutdown().await;
}
