//! A CustomResourceDefinition's `openAPIV3Schema`, parsed once into a tree the validator,
//! the pruner, the defaulter and the CEL rules walk (the apiextensions-apiserver's
//! structural schema).

use super::cel::Rule;
use super::formats;
use serde_json::Value;
use std::collections::BTreeMap;

/// One node of a structural schema.
#[derive(Debug, Default)]
pub struct Node {
    /// `type` ("" when unset: only with `x-kubernetes-int-or-string` or
    /// `x-kubernetes-preserve-unknown-fields`).
    pub ty: String,
    pub int_or_string: bool,
    pub nullable: bool,
    /// `format` as written.
    pub format: String,
    /// `format` as validated: empty when the server does not know it for this type (a real
    /// server strips unknown formats before validating, and warns about them on the CRD).
    pub checked_format: String,
    pub properties: BTreeMap<String, Node>,
    /// `additionalProperties` as a schema (`true` is a node that accepts anything).
    pub additional: Option<Box<Node>>,
    pub items: Option<Box<Node>>,
    pub required: Vec<String>,
    pub enumeration: Option<Vec<Value>>,
    /// `pattern`, and the regex (or why it does not compile).
    pub pattern: Option<(String, Result<regex::Regex, String>)>,
    pub max_length: Option<i64>,
    pub min_length: Option<i64>,
    pub max_items: Option<i64>,
    pub min_items: Option<i64>,
    pub max_properties: Option<i64>,
    pub min_properties: Option<i64>,
    pub maximum: Option<f64>,
    pub minimum: Option<f64>,
    pub exclusive_maximum: bool,
    pub exclusive_minimum: bool,
    pub multiple_of: Option<f64>,
    pub default: Option<Value>,
    pub preserve_unknown: bool,
    pub embedded_resource: bool,
    pub list_type: Option<String>,
    pub list_map_keys: Vec<String>,
    pub map_type: Option<String>,
    pub rules: Vec<Rule>,
    pub all_of: Vec<Node>,
    pub any_of: Vec<Node>,
    pub one_of: Vec<Node>,
    pub not: Option<Box<Node>>,
}

fn int(v: &Value) -> Option<i64> {
    v.as_i64().or_else(|| v.as_f64().map(|f| f as i64))
}

impl Node {
    /// A node that accepts anything and prunes nothing.
    pub fn any() -> Self {
        Self {
            preserve_unknown: true,
            ..Self::default()
        }
    }

    /// Parses a JSONSchemaProps object. Malformed parts are ignored (the CRD's own
    /// validation is not this parser's job).
    pub fn parse(s: &Value) -> Self {
        let str_of = |k: &str| s[k].as_str().unwrap_or("").to_string();
        let ty = str_of("type");
        let format = str_of("format");
        let int_or_string = s["x-kubernetes-int-or-string"].as_bool() == Some(true);
        let checked_format = if int_or_string {
            String::new()
        } else {
            formats::validated_format(&ty, &format)
        };
        let children = |k: &str| -> Vec<Node> {
            s[k].as_array()
                .map(|a| a.iter().map(Node::parse).collect())
                .unwrap_or_default()
        };
        Node {
            int_or_string,
            nullable: s["nullable"].as_bool() == Some(true),
            checked_format,
            properties: s["properties"]
                .as_object()
                .map(|m| m.iter().map(|(k, v)| (k.clone(), Node::parse(v))).collect())
                .unwrap_or_default(),
            additional: match &s["additionalProperties"] {
                Value::Object(_) => Some(Box::new(Node::parse(&s["additionalProperties"]))),
                Value::Bool(true) => Some(Box::new(Node::any())),
                _ => None,
            },
            items: s["items"]
                .is_object()
                .then(|| Box::new(Node::parse(&s["items"]))),
            required: s["required"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|r| r.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default(),
            enumeration: s["enum"].as_array().cloned(),
            pattern: s["pattern"].as_str().map(|p| {
                (
                    p.to_string(),
                    regex::Regex::new(p).map_err(|e| e.to_string()),
                )
            }),
            max_length: int(&s["maxLength"]),
            min_length: int(&s["minLength"]),
            max_items: int(&s["maxItems"]),
            min_items: int(&s["minItems"]),
            max_properties: int(&s["maxProperties"]),
            min_properties: int(&s["minProperties"]),
            maximum: s["maximum"].as_f64(),
            minimum: s["minimum"].as_f64(),
            exclusive_maximum: s["exclusiveMaximum"].as_bool() == Some(true),
            exclusive_minimum: s["exclusiveMinimum"].as_bool() == Some(true),
            multiple_of: s["multipleOf"].as_f64(),
            default: s.get("default").cloned(),
            preserve_unknown: s["x-kubernetes-preserve-unknown-fields"].as_bool() == Some(true),
            embedded_resource: s["x-kubernetes-embedded-resource"].as_bool() == Some(true),
            list_type: s["x-kubernetes-list-type"].as_str().map(str::to_string),
            list_map_keys: s["x-kubernetes-list-map-keys"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|k| k.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default(),
            map_type: s["x-kubernetes-map-type"].as_str().map(str::to_string),
            rules: s["x-kubernetes-validations"]
                .as_array()
                .map(|a| a.iter().map(Rule::parse).collect())
                .unwrap_or_default(),
            all_of: children("allOf"),
            any_of: children("anyOf"),
            one_of: children("oneOf"),
            not: s["not"]
                .is_object()
                .then(|| Box::new(Node::parse(&s["not"]))),
            ty,
            format,
        }
    }

    /// The schema of a child field of an object node: a property, else the
    /// `additionalProperties` schema.
    pub fn child(&self, key: &str) -> Option<&Node> {
        self.properties.get(key).or(self.additional.as_deref())
    }

    /// Whether the values of this map can be matched with the old object's by key (for
    /// ratcheting and `oldSelf`): `granular` and `atomic` maps, and maps with no map type.
    pub fn map_correlatable(&self) -> bool {
        matches!(
            self.map_type.as_deref(),
            None | Some("granular") | Some("atomic")
        )
    }

    /// For a `x-kubernetes-list-type: map` list: the item of `old` with the same keys as
    /// `item`, if any.
    pub fn correlated_item<'a>(&self, old: &'a [Value], item: &Value) -> Option<&'a Value> {
        if self.list_type.as_deref() != Some("map") || self.list_map_keys.is_empty() {
            return None;
        }
        let key_of = |v: &Value| -> Option<Vec<Value>> {
            let m = v.as_object()?;
            Some(
                self.list_map_keys
                    .iter()
                    .map(|k| m.get(k).cloned().unwrap_or(Value::Null))
                    .collect(),
            )
        };
        let want = key_of(item)?;
        old.iter().find(|o| key_of(o).as_ref() == Some(&want))
    }

    /// Every rule and every `format` of this schema and below, visited in document order.
    pub fn walk<'a>(&'a self, f: &mut dyn FnMut(&'a Node)) {
        f(self);
        for p in self.properties.values() {
            p.walk(f);
        }
        if let Some(a) = &self.additional {
            a.walk(f);
        }
        if let Some(i) = &self.items {
            i.walk(f);
        }
        for n in self.all_of.iter().chain(&self.any_of).chain(&self.one_of) {
            n.walk(f);
        }
        if let Some(n) = &self.not {
            n.walk(f);
        }
    }
}
