//! Kubernetes protobuf bodies, only as far as kubectl's generators send them.

use serde_json::Value;

/// Decodes a `k8s\0`-framed protobuf body into the equivalent JSON object.
pub fn decode(_body: &[u8]) -> Result<Value, String> {
    Err("Kubernetes protobuf bodies are not decoded yet".to_string())
}
