//! Discovery: `/version`, `/api`, `/apis` (legacy and aggregated), `/apis/<group>`,
//! resource lists of each group version, and the OpenAPI v3 documents kubectl reads to learn
//! that the server validates fields itself.

use super::status::{json_response, ApiError, ApiResult};
use super::ApiState;
use crate::store::ResourceType;
use axum::response::Response;
use http::{header, HeaderValue, StatusCode};
use serde_json::{json, Value};
use std::collections::BTreeMap;

pub const GIT_VERSION: &str = "v1.36.2";

pub fn version() -> Value {
    json!({
        "major": "1",
        "minor": "36",
        "emulationMajor": "1",
        "emulationMinor": "36",
        "minCompatibilityMajor": "1",
        "minCompatibilityMinor": "35",
        "gitVersion": format!("{GIT_VERSION}+cluster-sim"),
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "go1.25.0",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

fn wants_aggregated(accept: &str) -> bool {
    accept
        .split(',')
        .next()
        .is_some_and(|first| first.contains("as=APIGroupDiscoveryList"))
}

fn aggregated_response(items: Vec<Value>) -> Response {
    let body = json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": "apidiscovery.k8s.io/v2",
        "metadata": {},
        "items": items,
    });
    let mut resp = json_response(StatusCode::OK, &body);
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList",
        ),
    );
    resp.headers_mut()
        .insert(header::VARY, HeaderValue::from_static("Accept"));
    resp
}

/// Types grouped by group, then version.
fn by_group(st: &ApiState) -> BTreeMap<String, BTreeMap<String, Vec<ResourceType>>> {
    let mut out: BTreeMap<String, BTreeMap<String, Vec<ResourceType>>> = BTreeMap::new();
    for t in st.store.resource_types() {
        out.entry(t.key.group.clone())
            .or_default()
            .entry(t.version.clone())
            .or_default()
            .push(t);
    }
    out
}

fn aggregated_resource(t: &ResourceType) -> Value {
    let kind = json!({"group": t.key.group, "version": t.version, "kind": t.kind});
    let mut subresources = Vec::new();
    if t.status_subresource {
        subresources.push(json!({"subresource": "status", "responseKind": kind, "verbs": ["get", "patch", "update"]}));
    }
    if t.key.group.is_empty() && t.key.plural == "pods" {
        subresources.push(json!({"subresource": "portforward", "responseKind": {"group": "", "version": "v1", "kind": "PodPortForwardOptions"}, "verbs": ["create", "get"]}));
        subresources.push(json!({"subresource": "eviction", "responseKind": {"group": "policy", "version": "v1", "kind": "Eviction"}, "verbs": ["create"]}));
    }
    let mut r = json!({
        "resource": t.key.plural,
        "responseKind": kind,
        "scope": if t.namespaced { "Namespaced" } else { "Cluster" },
        "singularResource": t.singular,
        "verbs": t.verbs,
    });
    if !t.short_names.is_empty() {
        r["shortNames"] = json!(t.short_names);
    }
    if !t.categories.is_empty() {
        r["categories"] = json!(t.categories);
    }
    if !subresources.is_empty() {
        r["subresources"] = json!(subresources);
    }
    r
}

fn aggregated_group(name: &str, versions: &BTreeMap<String, Vec<ResourceType>>) -> Value {
    let versions: Vec<Value> = versions
        .iter()
        .map(|(v, types)| json!({"version": v, "resources": types.iter().map(aggregated_resource).collect::<Vec<_>>(), "freshness": "Current"}))
        .collect();
    if name.is_empty() {
        json!({"metadata": {}, "versions": versions})
    } else {
        json!({"metadata": {"name": name}, "versions": versions})
    }
}

pub fn core_versions(st: &ApiState, accept: &str) -> Response {
    if wants_aggregated(accept) {
        let groups = by_group(st);
        let items = groups
            .get("")
            .map(|v| vec![aggregated_group("", v)])
            .unwrap_or_default();
        return aggregated_response(items);
    }
    json_response(
        StatusCode::OK,
        &json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1:6443"}]}),
    )
}

fn group_entry(name: &str, versions: &BTreeMap<String, Vec<ResourceType>>) -> Value {
    let vs: Vec<Value> = versions
        .keys()
        .map(|v| json!({"groupVersion": format!("{name}/{v}"), "version": v}))
        .collect();
    let preferred = vs.first().cloned().unwrap_or(Value::Null);
    json!({"name": name, "versions": vs, "preferredVersion": preferred})
}

pub fn groups(st: &ApiState, accept: &str) -> Response {
    let groups = by_group(st);
    if wants_aggregated(accept) {
        let items = groups
            .iter()
            .filter(|(g, _)| !g.is_empty())
            .map(|(g, v)| aggregated_group(g, v))
            .collect();
        return aggregated_response(items);
    }
    let list: Vec<Value> = groups
        .iter()
        .filter(|(g, _)| !g.is_empty())
        .map(|(g, v)| group_entry(g, v))
        .collect();
    json_response(
        StatusCode::OK,
        &json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": list}),
    )
}

pub fn group(st: &ApiState, name: &str) -> ApiResult<Response> {
    let groups = by_group(st);
    let versions = groups
        .get(name)
        .filter(|_| !name.is_empty())
        .ok_or_else(ApiError::unknown_resource)?;
    let mut g = group_entry(name, versions);
    g["kind"] = json!("APIGroup");
    g["apiVersion"] = json!("v1");
    Ok(json_response(StatusCode::OK, &g))
}

pub fn resource_list(st: &ApiState, group: &str, version: &str) -> ApiResult<Response> {
    let groups = by_group(st);
    let types = groups
        .get(group)
        .and_then(|v| v.get(version))
        .ok_or_else(ApiError::unknown_resource)?;
    let mut resources = Vec::new();
    for t in types {
        let mut r = json!({
            "name": t.key.plural,
            "singularName": t.singular,
            "namespaced": t.namespaced,
            "kind": t.kind,
            "verbs": t.verbs,
        });
        if !t.short_names.is_empty() {
            r["shortNames"] = json!(t.short_names);
        }
        if !t.categories.is_empty() {
            r["categories"] = json!(t.categories);
        }
        resources.push(r);
        if t.status_subresource {
            resources.push(json!({"name": format!("{}/status", t.key.plural), "singularName": "", "namespaced": t.namespaced, "kind": t.kind, "verbs": ["get", "patch", "update"]}));
        }
        if group.is_empty() && t.key.plural == "pods" {
            resources.push(json!({"name": "pods/portforward", "singularName": "", "namespaced": true, "kind": "PodPortForwardOptions", "verbs": ["create", "get"]}));
            resources.push(json!({"name": "pods/eviction", "singularName": "", "namespaced": true, "group": "policy", "version": "v1", "kind": "Eviction", "verbs": ["create"]}));
        }
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Ok(json_response(
        StatusCode::OK,
        &json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}),
    ))
}

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

pub fn openapi_v3_index(st: &ApiState) -> Response {
    let rv = st.store.resource_version();
    let mut paths = serde_json::Map::new();
    for (g, versions) in by_group(st) {
        for v in versions.keys() {
            let p = gv_path(&g, v);
            paths.insert(
                p.clone(),
                json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash={rv:016X}")}),
            );
        }
    }
    json_response(StatusCode::OK, &json!({"paths": paths}))
}

/// A minimal OpenAPI v3 document for one group version: each kind's PATCH operation with the
/// `fieldValidation` parameter (what kubectl checks), and object schemas that accept anything.
pub fn openapi_v3(st: &ApiState, path: &str) -> ApiResult<Response> {
    let groups = by_group(st);
    let (group, version) = match path.split('/').collect::<Vec<_>>().as_slice() {
        ["api", v] => (String::new(), v.to_string()),
        ["apis", g, v] => (g.to_string(), v.to_string()),
        _ => return Err(ApiError::unknown_resource()),
    };
    let types = groups
        .get(&group)
        .and_then(|v| v.get(&version))
        .ok_or_else(ApiError::unknown_resource)?;
    let mut paths = serde_json::Map::new();
    let mut schemas = serde_json::Map::new();
    let params = json!([
        {"name": "dryRun", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
        {"name": "fieldManager", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
        {"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
        {"name": "force", "in": "query", "schema": {"type": "boolean", "uniqueItems": true}},
    ]);
    for t in types {
        let gvk = json!({"group": t.key.group, "version": t.version, "kind": t.kind});
        let prefix = format!("/{}", gv_path(&group, &version));
        let item = if t.namespaced {
            format!(
                "{prefix}/namespaces/{{namespace}}/{}/{{name}}",
                t.key.plural
            )
        } else {
            format!("{prefix}/{}/{{name}}", t.key.plural)
        };
        let collection = item.trim_end_matches("/{name}").to_string();
        let op = |action: &str| json!({"x-kubernetes-action": action, "x-kubernetes-group-version-kind": gvk, "parameters": params, "responses": {"200": {"description": "OK"}}});
        paths.insert(item, json!({"get": op("get"), "put": op("put"), "patch": op("patch"), "delete": op("delete")}));
        paths.insert(collection, json!({"get": op("list"), "post": op("post")}));
        let schema_name = format!(
            "{}.{}.{}",
            if group.is_empty() {
                "io.k8s.api.core"
            } else {
                group.as_str()
            },
            version,
            t.kind
        );
        schemas.insert(
            schema_name,
            json!({"type": "object", "x-kubernetes-group-version-kind": [gvk], "x-kubernetes-preserve-unknown-fields": true}),
        );
    }
    Ok(json_response(
        StatusCode::OK,
        &json!({"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": GIT_VERSION}, "paths": paths, "components": {"schemas": schemas}}),
    ))
}
