//! Label selectors (`=`, `==`, `!=`, `in`, `notin`, exists, `!key`) and field selectors
//! (`metadata.name`, `metadata.namespace`, and any other dotted path compared as a string).

use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Req {
    Eq(String, String),
    Ne(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

/// A parsed label selector; the empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector(Vec<Req>);

fn valid_key(k: &str) -> bool {
    !k.is_empty()
        && k.len() <= 317
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
        && k.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
}

fn valid_value(v: &str) -> bool {
    v.len() <= 63
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

/// Splits on commas that are not inside parentheses.
fn split_top(s: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
}

impl LabelSelector {
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut reqs = Vec::new();
        if s.trim().is_empty() {
            return Ok(Self(reqs));
        }
        for part in split_top(s) {
            let p = part.trim();
            if p.is_empty() {
                return Err(format!(
                    "unable to parse requirement: found '', expected: identifier in {s:?}"
                ));
            }
            let req = if let Some(k) = p.strip_prefix('!') {
                Req::NotExists(check_key(k.trim())?)
            } else if let Some((k, v)) = p.split_once("!=") {
                Req::Ne(check_key(k.trim())?, check_value(v.trim())?)
            } else if let Some((k, v)) = p.split_once("==") {
                Req::Eq(check_key(k.trim())?, check_value(v.trim())?)
            } else if let Some((k, v)) = p.split_once('=') {
                Req::Eq(check_key(k.trim())?, check_value(v.trim())?)
            } else if let Some((k, set)) = split_set(p, " notin ") {
                Req::NotIn(check_key(k)?, set?)
            } else if let Some((k, set)) = split_set(p, " in ") {
                Req::In(check_key(k)?, set?)
            } else {
                Req::Exists(check_key(p)?)
            };
            reqs.push(req);
        }
        Ok(Self(reqs))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn matches(&self, labels: &Value) -> bool {
        let get = |k: &str| labels.get(k).and_then(Value::as_str);
        self.0.iter().all(|r| match r {
            Req::Eq(k, v) => get(k) == Some(v.as_str()),
            Req::Ne(k, v) => get(k) != Some(v.as_str()),
            Req::In(k, vs) => get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            Req::NotIn(k, vs) => get(k).is_none_or(|x| !vs.iter().any(|v| v == x)),
            Req::Exists(k) => get(k).is_some(),
            Req::NotExists(k) => get(k).is_none(),
        })
    }
}

fn check_key(k: &str) -> Result<String, String> {
    if valid_key(k) {
        Ok(k.to_string())
    } else {
        Err(format!("unable to parse requirement: invalid label key {k:?}: name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"))
    }
}

fn check_value(v: &str) -> Result<String, String> {
    if valid_value(v) {
        Ok(v.to_string())
    } else {
        Err(format!("unable to parse requirement: invalid label value: {v:?}: a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.'"))
    }
}

type SetSplit<'a> = (&'a str, Result<Vec<String>, String>);

fn split_set<'a>(p: &'a str, op: &str) -> Option<SetSplit<'a>> {
    let idx = p.find(op)?;
    let key = p[..idx].trim();
    let rest = p[idx + op.len()..].trim();
    let inner = match rest.strip_prefix('(').and_then(|r| r.strip_suffix(')')) {
        Some(i) => i,
        None => {
            return Some((
                key,
                Err(format!(
                    "unable to parse requirement: found {rest:?}, expected: '('"
                )),
            ))
        }
    };
    let values: Result<Vec<String>, String> = inner
        .split(',')
        .map(|v| v.trim())
        .filter(|v| !v.is_empty())
        .map(check_value)
        .collect();
    Some((key, values))
}

/// A parsed field selector.
#[derive(Debug, Clone, Default)]
pub struct FieldSelector(Vec<(String, bool, String)>);

impl FieldSelector {
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut reqs = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (path, eq, value) = if let Some((k, v)) = part.split_once("!=") {
                (k, false, v)
            } else if let Some((k, v)) = part.split_once("==") {
                (k, true, v)
            } else if let Some((k, v)) = part.split_once('=') {
                (k, true, v)
            } else {
                return Err(format!(
                    "invalid selector: '{part}'; can't understand '{part}'"
                ));
            };
            reqs.push((path.trim().to_string(), eq, value.trim().to_string()));
        }
        Ok(Self(reqs))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn matches(&self, obj: &Value) -> bool {
        self.0.iter().all(|(path, eq, value)| {
            let mut cur = obj;
            for seg in path.split('.') {
                cur = &cur[seg];
            }
            let actual = match cur {
                Value::String(s) => s.clone(),
                Value::Null => String::new(),
                other => other.to_string(),
            };
            (actual == *value) == *eq
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn set_based_and_equality_requirements() {
        let labels = json!({"app": "web", "tier": "front"});
        let m = |s: &str| LabelSelector::parse(s).map(|sel| sel.matches(&labels));
        assert_eq!(m("app=web"), Ok(true));
        assert_eq!(m("app==web,tier!=back"), Ok(true));
        assert_eq!(m("app in (web, api)"), Ok(true));
        assert_eq!(m("app notin (web)"), Ok(false));
        assert_eq!(m("tier,!missing"), Ok(true));
        assert_eq!(m("!app"), Ok(false));
        assert_eq!(m("missing notin (x)"), Ok(true));
        assert!(LabelSelector::parse("app in web").is_err());
        assert!(LabelSelector::parse("a b=c").is_err());
    }

    #[test]
    fn field_selectors_on_metadata() {
        let obj = json!({"metadata": {"name": "a", "namespace": "ns"}});
        assert!(FieldSelector::parse("metadata.name=a").is_ok_and(|f| f.matches(&obj)));
        assert!(FieldSelector::parse("metadata.namespace!=ns").is_ok_and(|f| !f.matches(&obj)));
        assert!(FieldSelector::parse("nonsense").is_err());
    }
}
