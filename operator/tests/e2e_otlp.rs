//! Traces of a rotation: a real OTLP receiver (gRPC with tonic, and HTTP/protobuf) gets one
//! span per step, all in the rotation's one trace, children of the rotation's root span.

mod common;

use common::*;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::trace::v1::Span;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Clone, Default)]
struct Receiver {
    spans: Arc<Mutex<Vec<Span>>>,
    service_names: Arc<Mutex<Vec<String>>>,
}

impl Receiver {
    fn take(&self, req: ExportTraceServiceRequest) {
        for rs in req.resource_spans {
            if let Some(res) = rs.resource {
                for kv in res.attributes {
                    if kv.key == "service.name" {
                        if let Some(
                            opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(
                                v,
                            ),
                        ) = kv.value.and_then(|v| v.value)
                        {
                            self.service_names.lock().unwrap().push(v);
                        }
                    }
                }
            }
            for ss in rs.scope_spans {
                self.spans.lock().unwrap().extend(ss.spans);
            }
        }
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

/// Runs the guide's rotation with the operator exporting to `endpoint` over `protocol`, then
/// checks what `receiver` got.
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
    walkthrough(&sim, &ops).await;
    let history = status(&sim.client()).await.history;
    ops.stop().await; // SIGTERM flushes what is pending
    sim.shutdown().await;

    let trace_id = history[0].id.clone();
    let mut spans = Vec::new();
    for _ in 0..50 {
        spans = receiver.spans.lock().unwrap().clone();
        if spans.iter().any(|s| s.name == "rotation finished") {
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
    let root = spans
        .iter()
        .find(|s| s.name == "rotation")
        .expect("the rotation's root span");
    let mut per_step: BTreeMap<String, usize> = BTreeMap::new();
    for s in &spans {
        assert_eq!(
            hex(&s.trace_id),
            trace_id,
            "span {:?} is in the rotation's trace",
            s.name
        );
        if let Some(step) = s.name.strip_prefix("step ") {
            *per_step.entry(step.to_string()).or_default() += 1;
            assert_eq!(
                s.parent_span_id, root.span_id,
                "step spans are children of the rotation span"
            );
            assert!(s.end_time_unix_nano >= s.start_time_unix_nano);
            let attrs: Vec<&str> = s.attributes.iter().map(|a| a.key.as_str()).collect();
            for key in ["rotation", "step", "phase", "outcome"] {
                assert!(attrs.contains(&key), "span {} carries {key}", s.name);
            }
        }
    }
    // Executions that changed something are spans too (children of the root span).
    let mut executed: BTreeMap<String, usize> = BTreeMap::new();
    for s in spans.iter().filter(|s| s.name.starts_with("execute ")) {
        *executed
            .entry(s.name["execute ".len()..].to_string())
            .or_default() += 1;
        assert_eq!(s.parent_span_id, root.span_id);
        assert!(s.attributes.iter().any(|a| a.key == "outcome"));
    }
    for step in trust_rotation_steps::rotation::workflow().steps() {
        assert!(
            executed.contains_key(step.name()),
            "an execution span of {}: {executed:?}",
            step.name()
        );
    }
    let expected: BTreeMap<String, usize> = trust_rotation_steps::rotation::workflow()
        .steps()
        .iter()
        .map(|s| (s.name().to_string(), 1))
        .collect();
    assert_eq!(per_step, expected, "exactly one span per step");
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_grpc_receives_one_span_per_step_in_one_trace() {
    let receiver = Receiver::default();
    let addr = free_addr();
    let server =
        tonic::transport::Server::builder().add_service(TraceServiceServer::new(receiver.clone()));
    let handle = tokio::spawn(server.serve(addr));
    rotation_is_one_trace(receiver, format!("http://{addr}"), "grpc").await;
    handle.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_http_protobuf_receives_one_span_per_step_in_one_trace() {
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
