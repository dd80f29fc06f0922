//! Kubernetes protobuf request bodies, as far as kubectl's generators send them
//! (`kubectl create namespace|configmap|secret|serviceaccount`): the `k8s\0` envelope around
//! a `runtime.Unknown`, and hand-written messages for just those kinds (field numbers from
//! `k8s.io/api/core/v1/generated.proto`). Decoded into the same JSON a client would send.

use base64::Engine;
use prost::Message;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

const MAGIC: &[u8] = b"k8s\0";

#[derive(Clone, PartialEq, Message)]
struct Unknown {
    #[prost(message, optional, tag = "1")]
    type_meta: Option<TypeMeta>,
    #[prost(bytes = "vec", optional, tag = "2")]
    raw: Option<Vec<u8>>,
    #[prost(string, optional, tag = "3")]
    content_encoding: Option<String>,
    #[prost(string, optional, tag = "4")]
    content_type: Option<String>,
}

#[derive(Clone, PartialEq, Message)]
struct TypeMeta {
    #[prost(string, optional, tag = "1")]
    api_version: Option<String>,
    #[prost(string, optional, tag = "2")]
    kind: Option<String>,
}

#[derive(Clone, PartialEq, Message)]
struct ObjectMeta {
    #[prost(string, optional, tag = "1")]
    name: Option<String>,
    #[prost(string, optional, tag = "2")]
    generate_name: Option<String>,
    #[prost(string, optional, tag = "3")]
    namespace: Option<String>,
    #[prost(btree_map = "string, string", tag = "11")]
    labels: BTreeMap<String, String>,
    #[prost(btree_map = "string, string", tag = "12")]
    annotations: BTreeMap<String, String>,
    #[prost(string, repeated, tag = "14")]
    finalizers: Vec<String>,
}

#[derive(Clone, PartialEq, Message)]
struct Namespace {
    #[prost(message, optional, tag = "1")]
    metadata: Option<ObjectMeta>,
    #[prost(message, optional, tag = "2")]
    spec: Option<NamespaceSpec>,
}

#[derive(Clone, PartialEq, Message)]
struct NamespaceSpec {
    #[prost(string, repeated, tag = "1")]
    finalizers: Vec<String>,
}

#[derive(Clone, PartialEq, Message)]
struct ConfigMap {
    #[prost(message, optional, tag = "1")]
    metadata: Option<ObjectMeta>,
    #[prost(btree_map = "string, string", tag = "2")]
    data: BTreeMap<String, String>,
    #[prost(btree_map = "string, bytes", tag = "3")]
    binary_data: BTreeMap<String, Vec<u8>>,
    #[prost(bool, optional, tag = "4")]
    immutable: Option<bool>,
}

#[derive(Clone, PartialEq, Message)]
struct Secret {
    #[prost(message, optional, tag = "1")]
    metadata: Option<ObjectMeta>,
    #[prost(btree_map = "string, bytes", tag = "2")]
    data: BTreeMap<String, Vec<u8>>,
    #[prost(string, optional, tag = "3")]
    r#type: Option<String>,
    #[prost(btree_map = "string, string", tag = "4")]
    string_data: BTreeMap<String, String>,
    #[prost(bool, optional, tag = "5")]
    immutable: Option<bool>,
}

#[derive(Clone, PartialEq, Message)]
struct LocalObjectReference {
    #[prost(string, optional, tag = "1")]
    name: Option<String>,
}

#[derive(Clone, PartialEq, Message)]
struct ServiceAccount {
    #[prost(message, optional, tag = "1")]
    metadata: Option<ObjectMeta>,
    #[prost(message, repeated, tag = "3")]
    image_pull_secrets: Vec<LocalObjectReference>,
    #[prost(bool, optional, tag = "4")]
    automount_service_account_token: Option<bool>,
}

#[derive(Clone, PartialEq, Message)]
struct Deployment {
    #[prost(message, optional, tag = "1")]
    metadata: Option<ObjectMeta>,
    #[prost(message, optional, tag = "2")]
    spec: Option<DeploymentSpec>,
}

#[derive(Clone, PartialEq, Message)]
struct DeploymentSpec {
    #[prost(int32, optional, tag = "1")]
    replicas: Option<i32>,
    #[prost(message, optional, tag = "2")]
    selector: Option<LabelSelector>,
    #[prost(message, optional, tag = "3")]
    template: Option<PodTemplateSpec>,
}

#[derive(Clone, PartialEq, Message)]
struct LabelSelector {
    #[prost(btree_map = "string, string", tag = "1")]
    match_labels: BTreeMap<String, String>,
}

#[derive(Clone, PartialEq, Message)]
struct PodTemplateSpec {
    #[prost(message, optional, tag = "1")]
    metadata: Option<ObjectMeta>,
    #[prost(message, optional, tag = "2")]
    spec: Option<PodSpec>,
}

#[derive(Clone, PartialEq, Message)]
struct PodSpec {
    #[prost(message, repeated, tag = "2")]
    containers: Vec<Container>,
}

#[derive(Clone, PartialEq, Message)]
struct Container {
    #[prost(string, optional, tag = "1")]
    name: Option<String>,
    #[prost(string, optional, tag = "2")]
    image: Option<String>,
    #[prost(string, repeated, tag = "3")]
    command: Vec<String>,
    #[prost(string, repeated, tag = "4")]
    args: Vec<String>,
    #[prost(message, repeated, tag = "6")]
    ports: Vec<ContainerPort>,
}

#[derive(Clone, PartialEq, Message)]
struct ContainerPort {
    #[prost(string, optional, tag = "1")]
    name: Option<String>,
    #[prost(int32, optional, tag = "3")]
    container_port: Option<i32>,
    #[prost(string, optional, tag = "4")]
    protocol: Option<String>,
}

fn non_empty(s: Option<String>) -> Option<String> {
    s.filter(|s| !s.is_empty())
}

fn container_json(c: Container) -> Value {
    let mut o = json!({"name": non_empty(c.name).unwrap_or_default()});
    if let Some(i) = non_empty(c.image) {
        o["image"] = json!(i);
    }
    if !c.command.is_empty() {
        o["command"] = json!(c.command);
    }
    if !c.args.is_empty() {
        o["args"] = json!(c.args);
    }
    if !c.ports.is_empty() {
        o["ports"] = json!(c
            .ports
            .into_iter()
            .map(|p| {
                let mut port = json!({"containerPort": p.container_port.unwrap_or(0)});
                if let Some(n) = non_empty(p.name) {
                    port["name"] = json!(n);
                }
                if let Some(proto) = non_empty(p.protocol) {
                    port["protocol"] = json!(proto);
                }
                port
            })
            .collect::<Vec<_>>());
    }
    o
}

fn meta_json(m: Option<ObjectMeta>) -> Value {
    let m = m.unwrap_or_default();
    let mut out = Map::new();
    if let Some(n) = m.name.filter(|s| !s.is_empty()) {
        out.insert("name".into(), json!(n));
    }
    if let Some(n) = m.generate_name.filter(|s| !s.is_empty()) {
        out.insert("generateName".into(), json!(n));
    }
    if let Some(n) = m.namespace.filter(|s| !s.is_empty()) {
        out.insert("namespace".into(), json!(n));
    }
    if !m.labels.is_empty() {
        out.insert("labels".into(), json!(m.labels));
    }
    if !m.annotations.is_empty() {
        out.insert("annotations".into(), json!(m.annotations));
    }
    if !m.finalizers.is_empty() {
        out.insert("finalizers".into(), json!(m.finalizers));
    }
    Value::Object(out)
}

fn b64_map(m: BTreeMap<String, Vec<u8>>) -> Value {
    let b64 = base64::engine::general_purpose::STANDARD;
    Value::Object(
        m.into_iter()
            .map(|(k, v)| (k, json!(b64.encode(v))))
            .collect(),
    )
}

/// Decodes a `k8s\0`-framed protobuf body into the equivalent JSON object.
pub fn decode(body: &[u8]) -> Result<Value, String> {
    let rest = body
        .strip_prefix(MAGIC)
        .ok_or("the protobuf body does not start with the Kubernetes magic number \"k8s\\x00\"")?;
    let unknown = Unknown::decode(rest)
        .map_err(|e| format!("the protobuf envelope (runtime.Unknown) does not decode: {e}"))?;
    let tm = unknown.type_meta.unwrap_or_default();
    let api_version = tm.api_version.unwrap_or_default();
    let kind = tm.kind.unwrap_or_default();
    if unknown
        .content_encoding
        .as_deref()
        .is_some_and(|e| !e.is_empty())
    {
        return Err(format!(
            "protobuf content encoding {:?} is not supported",
            unknown.content_encoding
        ));
    }
    let raw = unknown.raw.unwrap_or_default();
    let bad = |e: prost::DecodeError| format!("the protobuf {kind} does not decode: {e}");
    let mut obj = match (api_version.as_str(), kind.as_str()) {
        ("v1", "Namespace") => {
            let ns = Namespace::decode(raw.as_slice()).map_err(bad)?;
            let mut o = json!({"metadata": meta_json(ns.metadata), "spec": {}});
            if let Some(spec) = ns.spec.filter(|s| !s.finalizers.is_empty()) {
                o["spec"]["finalizers"] = json!(spec.finalizers);
            }
            o
        }
        ("v1", "ConfigMap") => {
            let cm = ConfigMap::decode(raw.as_slice()).map_err(bad)?;
            let mut o = json!({"metadata": meta_json(cm.metadata)});
            if !cm.data.is_empty() {
                o["data"] = json!(cm.data);
            }
            if !cm.binary_data.is_empty() {
                o["binaryData"] = b64_map(cm.binary_data);
            }
            if let Some(i) = cm.immutable {
                o["immutable"] = json!(i);
            }
            o
        }
        ("v1", "Secret") => {
            let s = Secret::decode(raw.as_slice()).map_err(bad)?;
            let mut data = s.data;
            // stringData is write-only: merged into data as the API server does.
            for (k, v) in s.string_data {
                data.insert(k, v.into_bytes());
            }
            let mut o = json!({"metadata": meta_json(s.metadata), "type": s.r#type.filter(|t| !t.is_empty()).unwrap_or_else(|| "Opaque".into())});
            if !data.is_empty() {
                o["data"] = b64_map(data);
            }
            if let Some(i) = s.immutable {
                o["immutable"] = json!(i);
            }
            o
        }
        ("v1", "ServiceAccount") => {
            let sa = ServiceAccount::decode(raw.as_slice()).map_err(bad)?;
            let mut o = json!({"metadata": meta_json(sa.metadata)});
            if !sa.image_pull_secrets.is_empty() {
                o["imagePullSecrets"] = json!(sa
                    .image_pull_secrets
                    .into_iter()
                    .map(|r| json!({"name": r.name.unwrap_or_default()}))
                    .collect::<Vec<_>>());
            }
            if let Some(a) = sa.automount_service_account_token {
                o["automountServiceAccountToken"] = json!(a);
            }
            o
        }
        ("apps/v1", "Deployment") => {
            let d = Deployment::decode(raw.as_slice()).map_err(bad)?;
            let spec = d.spec.unwrap_or_default();
            let template = spec.template.unwrap_or_default();
            let containers: Vec<Value> = template
                .spec
                .unwrap_or_default()
                .containers
                .into_iter()
                .map(container_json)
                .collect();
            let mut s = json!({
                "selector": {"matchLabels": spec.selector.unwrap_or_default().match_labels},
                "template": {"metadata": meta_json(template.metadata), "spec": {"containers": containers}},
            });
            if let Some(r) = spec.replicas {
                s["replicas"] = json!(r);
            }
            json!({"metadata": meta_json(d.metadata), "spec": s})
        }
        _ => {
            return Err(format!(
                "this simulator decodes Kubernetes protobuf only for v1 Namespace, ConfigMap, Secret, ServiceAccount and apps/v1 Deployment, not {api_version} {kind}: send JSON (e.g. kubectl apply -f, or kubectl create ... -o yaml --dry-run=client | kubectl apply -f -)"
            ))
        }
    };
    obj["apiVersion"] = json!(api_version);
    obj["kind"] = json!(kind);
    Ok(obj)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(kind: &str, raw: Vec<u8>) -> Vec<u8> {
        let u = Unknown {
            type_meta: Some(TypeMeta {
                api_version: Some("v1".into()),
                kind: Some(kind.into()),
            }),
            raw: Some(raw),
            content_encoding: Some(String::new()),
            content_type: Some(String::new()),
        };
        let mut out = MAGIC.to_vec();
        out.extend(u.encode_to_vec());
        out
    }

    #[test]
    fn decodes_a_configmap_as_kubectl_create_sends_it() {
        let cm = ConfigMap {
            metadata: Some(ObjectMeta {
                name: Some("c".into()),
                namespace: Some("ns".into()),
                ..Default::default()
            }),
            data: [("k".to_string(), "v".to_string())].into(),
            ..Default::default()
        };
        let v =
            decode(&envelope("ConfigMap", cm.encode_to_vec())).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            v,
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "ns"}, "data": {"k": "v"}})
        );
    }

    #[test]
    fn secret_string_data_lands_in_data_base64() {
        let s = Secret {
            metadata: Some(ObjectMeta {
                name: Some("s".into()),
                ..Default::default()
            }),
            string_data: [("a".to_string(), "b".to_string())].into(),
            ..Default::default()
        };
        let v = decode(&envelope("Secret", s.encode_to_vec())).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(v["data"], json!({"a": "Yg=="}));
        assert_eq!(v["type"], "Opaque");
    }

    #[test]
    fn decodes_a_deployment_like_kubectl_create_deployment_sends() {
        // What `kubectl create deployment d --image=x --port=80 --replicas=2` sends (kubectl
        // encodes every field, empty ones included; tests/kubectl.sh checks the real thing).
        let d = Deployment {
            metadata: Some(ObjectMeta {
                name: Some("d".into()),
                labels: [("app".to_string(), "d".to_string())].into(),
                ..Default::default()
            }),
            spec: Some(DeploymentSpec {
                replicas: Some(2),
                selector: Some(LabelSelector {
                    match_labels: [("app".to_string(), "d".to_string())].into(),
                }),
                template: Some(PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: [("app".to_string(), "d".to_string())].into(),
                        ..Default::default()
                    }),
                    spec: Some(PodSpec {
                        containers: vec![Container {
                            name: Some("x".into()),
                            image: Some("x".into()),
                            ports: vec![ContainerPort {
                                container_port: Some(80),
                                protocol: Some(String::new()),
                                name: Some(String::new()),
                            }],
                            ..Default::default()
                        }],
                    }),
                }),
            }),
        };
        let mut body = MAGIC.to_vec();
        body.extend(
            Unknown {
                type_meta: Some(TypeMeta {
                    api_version: Some("apps/v1".into()),
                    kind: Some("Deployment".into()),
                }),
                raw: Some(d.encode_to_vec()),
                content_encoding: None,
                content_type: None,
            }
            .encode_to_vec(),
        );
        let v = decode(&body).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(v["spec"]["replicas"], 2);
        assert_eq!(v["spec"]["selector"]["matchLabels"]["app"], "d");
        assert_eq!(
            v["spec"]["template"]["spec"]["containers"],
            json!([{"name": "x", "image": "x", "ports": [{"containerPort": 80}]}])
        );
    }

    #[test]
    fn garbage_and_unknown_kinds_are_errors_not_panics() {
        assert!(decode(b"nope").is_err());
        assert!(decode(b"k8s\0\xff\xff\xff").is_err());
        assert!(decode(&envelope("Pod", vec![])).is_err_and(|e| e.contains("kubectl apply")));
    }
}
