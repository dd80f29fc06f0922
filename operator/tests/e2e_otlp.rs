//! Traces of a rotation: a real OTLP receiver (gRPC with tonic, and HTTP/protobuf) gets the
//! rotation as one tree in one trace: the `rotation` span over the rotation's real duration,
//! a `step <name>` span per step under it, an `execute <name>` span per execution that changed
//! something under its step, and the probe sweeps and API writes under their execution, even
//! though the operator is SIGKILLed and replaced in the middle of a step.

mod common;

use common::*;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use trust_rotation_crds::TrustAnchorRotation;

/// A span as received, with the `service.instance.id` of the process that sent it.
#[derive(Clone)]
struct Received {
    instance: String,
    span: Span,
}

#[derive(Clone, Default)]
struct Receiver {
    spans: Arc<Mutex<Vec<Received>>>,
    service_names: Arc<Mutex<Vec<String>>>,
}

fn string_attr(attrs: &[KeyValue], key: &str) -> Option<String> {
    attrs.iter().find(|kv| kv.key == key).and_then(|kv| {
        match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
            Some(Value::StringValue(s)) => Some(s.clone()),
            _ => None,
        }
    })
}

impl Receiver {
    fn take(&self, req: ExportTraceServiceRequest) {
        for rs in req.resource_spans {
            let attrs = rs.resource.map(|r| r.attributes).unwrap_or_default();
            if let Some(name) = string_attr(&attrs, "service.name") {
                self.service_names.lock().unwrap().push(name);
            }
            let instance = string_attr(&attrs, "service.instance.id").unwrap_or_default();
            for ss in rs.scope_spans {
                self.spans
                    .lock()
                    .unwrap()
                    .extend(ss.spans.into_iter().map(|span| Received {
                        instance: instance.clone(),
                        span,
                    }));
            }
        }
    }

    fn has(&self, name: &str) -> bool {
        self.spans
            .lock()
            .unwrap()
            .iter()
            .any(|r| r.span.name == name)
    }

    /// Waits until a span named `name` arrived.
    async fn wait_for(&self, name: &str) {
        for _ in 0..200 {
            if self.has(name) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no span {name:?} arrived");
    }
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.take(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

fn free_addr() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

const KILLED_IN: &str = "AwaitPropagation";

/// Runs the guide's rotation with the operator exporting to `endpoint` over `protocol`,
/// SIGKILLs the operator inside AwaitPropagation and starts a new one, then checks the tree
/// `receiver` got.
async fn rotation_is_one_trace(receiver: Receiver, endpoint: String, protocol: &str) {
    let sim = start_sim().await;
    let ops = Ops::new(
        sim.kubeconfig_path(),
        vec![
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol.to_string()),
        ],
    );
    ops.start().await;

    // Once the rotation waits in AwaitPropagation and the first process exported that
    // step's first execution, SIGKILL it and start another. Holding the operator slot keeps
    // the walkthrough (which scrapes metrics through it) from restarting the data plane
    // before the kill: the step is still waiting when the new process takes over.
    let killer = {
        let ops = ops.clone();
        let receiver = receiver.clone();
        let client = sim.client();
        tokio::spawn(async move {
            let api = kube::Api::<TrustAnchorRotation>::all(client);
            let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
            loop {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the rotation never waited in {KILLED_IN}"
                );
                let step = api
                    .get("cluster")
                    .await
                    .ok()
                    .and_then(|t| t.status)
                    .and_then(|s| s.current_step);
                if step.as_deref() == Some(KILLED_IN) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let mut current = ops.current.lock().await;
            receiver.wait_for(&format!("execute {KILLED_IN}")).await;
            receiver.wait_for("step RollControlPlane").await;
            if let Some(op) = current.take() {
                op.kill().await;
            }
            *current = Some(Operator::spawn(&ops.kubeconfig, &ops.env));
        })
    };

    walkthrough(&sim, &ops).await;
    killer.await.expect("the operator was killed mid-rotation");
    let history = status(&sim.client()).await.history;
    ops.stop().await; // SIGTERM flushes what is pending
    sim.shutdown().await;

    let done = &history[0];
    let trace_id = done.id.clone();
    let root_span_id = done
        .trace_parent
        .as_deref()
        .and_then(|tp| tp.split('-').nth(2))
        .expect("a traceparent")
        .to_string();
    for _ in 0..50 {
        if receiver.has("rotation") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(receiver
        .service_names
        .lock()
        .unwrap()
        .iter()
        .all(|n| n == "trust-rotation-operator"));
    let received = receiver.spans.lock().unwrap().clone();
    let spans: Vec<&Span> = received.iter().map(|r| &r.span).collect();
    let instance_of: HashMap<Vec<u8>, &str> = received
        .iter()
        .map(|r| (r.span.span_id.clone(), r.instance.as_str()))
        .collect();
    let by_id: HashMap<&[u8], &Span> = spans.iter().map(|s| (&s.span_id[..], *s)).collect();
    let parent = |s: &Span| by_id.get(&s.parent_span_id[..]).copied();

    // Everything the operator exported is in the rotation's trace, and nothing is an orphan.
    for s in &spans {
        assert_eq!(
            hex(&s.trace_id),
            trace_id,
            "span {:?} is in the rotation's trace",
            s.name
        );
        assert!(s.end_time_unix_nano >= s.start_time_unix_nano, "{}", s.name);
        if s.name != "rotation" {
            assert!(
                parent(s).is_some(),
                "span {:?} has its parent among the exported spans",
                s.name
            );
        }
    }

    // The root: the persisted ids, over the rotation's real duration.
    let roots: Vec<&&Span> = spans.iter().filter(|s| s.name == "rotation").collect();
    assert_eq!(roots.len(), 1, "one rotation span");
    let root = roots[0];
    assert_eq!(hex(&root.span_id), root_span_id, "the persisted span id");
    assert!(
        root.parent_span_id.is_empty(),
        "the rotation span is the root"
    );
    let nanos = |t: &jiff::Timestamp| t.as_nanosecond() as u64;
    let started = nanos(&done.started_at.0);
    let finished = nanos(&done.finished_at.as_ref().expect("finished").0);
    assert_eq!(
        root.start_time_unix_nano, started,
        "starts when the rotation started"
    );
    assert!(
        root.end_time_unix_nano >= finished && finished - started >= 1_000_000_000,
        "ends when the rotation finished, seconds later"
    );
    assert_ne!(
        instance_of[&root.span_id],
        instance_of[&spans
            .iter()
            .find(|s| s.name == "step CopyPreviousAnchor")
            .expect("the first step's span")
            .span_id],
        "the root is emitted by the process that finished the rotation, not the one that started it"
    );

    // One span per step, under the root, inside its interval.
    let workflow = trust_rotation_steps::rotation::workflow();
    let names: Vec<&str> = workflow.steps().iter().map(|s| s.name()).collect();
    let mut per_step: BTreeMap<&str, usize> = BTreeMap::new();
    for s in spans.iter().filter(|s| s.name.starts_with("step ")) {
        *per_step.entry(&s.name["step ".len()..]).or_default() += 1;
        assert_eq!(
            s.parent_span_id, root.span_id,
            "{} is under the root",
            s.name
        );
        assert!(
            s.start_time_unix_nano >= root.start_time_unix_nano
                && s.end_time_unix_nano <= root.end_time_unix_nano,
            "{} lies within the rotation",
            s.name
        );
        let attrs: Vec<&str> = s.attributes.iter().map(|a| a.key.as_str()).collect();
        for key in ["rotation", "step", "phase", "outcome"] {
            assert!(attrs.contains(&key), "span {} carries {key}", s.name);
        }
    }
    let expected: BTreeMap<&str, usize> = names.iter().map(|n| (*n, 1)).collect();
    assert_eq!(per_step, expected, "exactly one span per step");

    // Executions under their step's span, inside its interval.
    let mut executed: BTreeMap<&str, Vec<&Span>> = BTreeMap::new();
    for s in spans.iter().filter(|s| s.name.starts_with("execute ")) {
        let step = &s.name["execute ".len()..];
        executed.entry(step).or_default().push(s);
        let p = parent(s).expect("an execution has a parent");
        assert_eq!(
            p.name,
            format!("step {step}"),
            "{} is under its step",
            s.name
        );
        assert!(
            s.start_time_unix_nano >= p.start_time_unix_nano
                && s.end_time_unix_nano <= p.end_time_unix_nano,
            "{} lies within its step",
            s.name
        );
        assert!(s.attributes.iter().any(|a| a.key == "outcome"));
    }
    for n in &names {
        assert!(
            executed.contains_key(n),
            "an execution span of {n}: {:?}",
            executed.keys()
        );
    }

    // The step the operator was killed in: executions by both processes, one step span.
    let killed: BTreeSet<&str> = executed[KILLED_IN]
        .iter()
        .map(|s| instance_of[&s.span_id])
        .collect();
    assert_eq!(
        killed.len(),
        2,
        "{KILLED_IN} was executed by the killed process and by its successor, under one step span"
    );

    // API writes and probe sweeps under the execution that made them.
    let under = |name: &str| -> Vec<String> {
        spans
            .iter()
            .filter(|s| s.name == name)
            .map(|s| parent(s).map(|p| p.name.clone()).unwrap_or_default())
            .collect()
    };
    let secret_writes: BTreeSet<String> =
        under("apply Secret cert-manager/linkerd-previous-anchor")
            .into_iter()
            .collect();
    assert!(
        secret_writes.contains("execute ReduceBundle")
            && secret_writes
                .iter()
                .all(|p| p == "execute CopyPreviousAnchor" || p == "execute ReduceBundle"),
        "the previous-anchor Secret is written by CopyPreviousAnchor and ReduceBundle: {secret_writes:?}"
    );
    assert_eq!(
        under("apply ConfigMap linkerd/linkerd-identity-trust-roots")
            .into_iter()
            .collect::<BTreeSet<_>>(),
        ["execute ReconcileBundle", "execute ReduceBundle"]
            .map(String::from)
            .into(),
        "the bundle is written by ReconcileBundle and ReduceBundle"
    );
    for d in CONTROL_PLANE {
        let mut restarts = under(&format!("patch Deployment linkerd/{d}"));
        restarts.sort();
        assert_eq!(
            restarts,
            [
                "execute RollControlPlane",
                "execute RollControlPlaneReduced",
                "execute RollControlPlaneRenewed"
            ],
            "{d} is restarted once by each RollControlPlane step"
        );
    }
    let sweeps = under("probe sweep");
    assert!(!sweeps.is_empty(), "probe sweeps are spans");
    assert!(
        sweeps.iter().all(|p| p.starts_with("execute ")),
        "probe sweeps are under executions: {sweeps:?}"
    );
    let status_writes = under("apply TrustAnchorRotation/status cluster");
    assert!(status_writes.len() > names.len());
    for p in &status_writes {
        assert!(
            p.starts_with("execute ") || p.ends_with(" rotation"),
            "a status write under {p:?}"
        );
    }
    assert!(status_writes.iter().any(|p| p == "start rotation"));
    assert!(status_writes.iter().any(|p| p == "finish rotation"));
    assert!(
        under("publish Event PhaseChanged").len() >= 5,
        "Events are API writes too"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_grpc_receives_the_rotation_as_one_tree_across_a_kill() {
    let receiver = Receiver::default();
    let addr = free_addr();
    let server =
        tonic::transport::Server::builder().add_service(TraceServiceServer::new(receiver.clone()));
    let handle = tokio::spawn(server.serve(addr));
    rotation_is_one_trace(receiver, format!("http://{addr}"), "grpc").await;
    handle.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_http_protobuf_receives_the_rotation_as_one_tree_across_a_kill() {
    use axum::body::Bytes;
    use prost::Message;
    let receiver = Receiver::default();
    let r = receiver.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: Bytes| {
            let r = r.clone();
            async move {
                match ExportTraceServiceRequest::decode(body) {
                    Ok(req) => {
                        r.take(req);
                        (
                            axum::http::StatusCode::OK,
                            ExportTraceServiceResponse {
                                partial_success: None,
                            }
                            .encode_to_vec(),
                        )
                    }
                    Err(e) => (
                        axum::http::StatusCode::BAD_REQUEST,
                        e.to_string().into_bytes(),
                    ),
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = tokio::spawn(async move { axum::serve(listener, app).await });
    rotation_is_one_trace(receiver, format!("http://{addr}"), "http/protobuf").await;
    handle.abort();
}
