//! Schema `format`s as the apiextensions-apiserver treats them: the formats it knows (others
//! are ignored when validating, and warned about when a CRD is written), and the checks of
//! string values against the known ones.

use serde_json::Value;
use std::sync::OnceLock;

/// String formats a real API server knows (`supportedVersionedFormats`, up to 1.34), as
/// written; they are compared with dashes removed, as go-openapi normalizes them.
const STRING_FORMATS: &[&str] = &[
    "bsonobjectid",
    "uri",
    "email",
    "hostname",
    "ipv4",
    "ipv6",
    "cidr",
    "mac",
    "uuid",
    "uuid3",
    "uuid4",
    "uuid5",
    "isbn",
    "isbn10",
    "isbn13",
    "creditcard",
    "ssn",
    "hexcolor",
    "rgbcolor",
    "byte",
    "password",
    "date",
    "duration",
    "datetime",
    "k8s-short-name",
    "k8s-long-name",
];

fn normalized(format: &str) -> String {
    format.replace('-', "")
}

fn known_string_format(format: &str) -> bool {
    let n = normalized(format);
    STRING_FORMATS.iter().any(|f| normalized(f) == n)
}

/// The format a value of type `ty` is validated against: `format` if the server knows it
/// for that type, else none (`StripUnsupportedFormatsPostProcessor`).
pub fn validated_format(ty: &str, format: &str) -> String {
    if unrecognized(ty, format) {
        String::new()
    } else {
        format.to_string()
    }
}

/// Whether a real server warns `unrecognized format "<format>"` for this type and format
/// (`GetUnrecognizedFormats`): strings know the list above, integers `int32`/`int64`,
/// numbers `float`/`double`, and no other type has formats.
pub fn unrecognized(ty: &str, format: &str) -> bool {
    if format.is_empty() {
        return false;
    }
    match ty {
        "" | "string" => !known_string_format(format),
        "integer" => !matches!(format, "int32" | "int64"),
        "number" => !matches!(format, "float" | "double"),
        _ => true,
    }
}

/// The `Warning`s a real server sends when a CRD with these unrecognized formats is
/// created: one per format occurrence (the response deduplicates them).
pub fn crd_format_warnings(crd: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let mut visit = |s: &Value| {
        let format = s["format"].as_str().unwrap_or("");
        let ty = s["type"].as_str().unwrap_or("");
        if unrecognized(ty, format) {
            out.push(format!(
                "unrecognized format {}",
                super::errors::go_quote(format)
            ));
        }
    };
    if s_is_object(&crd["spec"]["validation"]["openAPIV3Schema"]) {
        walk_raw(&crd["spec"]["validation"]["openAPIV3Schema"], &mut visit);
    }
    for v in crd["spec"]["versions"].as_array().into_iter().flatten() {
        walk_raw(&v["schema"]["openAPIV3Schema"], &mut visit);
    }
    out
}

fn s_is_object(v: &Value) -> bool {
    v.is_object()
}

/// Visits every schema in a raw JSONSchemaProps tree, as `SchemaHas` does.
fn walk_raw(s: &Value, f: &mut dyn FnMut(&Value)) {
    if !s.is_object() {
        return;
    }
    f(s);
    match &s["items"] {
        Value::Object(_) => walk_raw(&s["items"], f),
        Value::Array(a) => a.iter().for_each(|i| walk_raw(i, f)),
        _ => {}
    }
    for k in ["allOf", "oneOf", "anyOf"] {
        for i in s[k].as_array().into_iter().flatten() {
            walk_raw(i, f);
        }
    }
    for k in ["not", "additionalProperties", "additionalItems"] {
        walk_raw(&s[k], f);
    }
    for k in [
        "properties",
        "patternProperties",
        "definitions",
        "dependencies",
    ] {
        for v in s[k].as_object().into_iter().flat_map(|m| m.values()) {
            walk_raw(v, f);
        }
    }
}

fn re(cell: &'static OnceLock<regex::Regex>, pattern: &str) -> &'static regex::Regex {
    cell.get_or_init(|| regex::Regex::new(pattern).unwrap_or_else(|e| panic!("{pattern}: {e}")))
}

/// Whether `s` is a valid value of the (known) string `format`. Formats whose exact rules
/// the simulator does not reproduce (ISBN, credit card, ...) accept any string.
pub fn valid(format: &str, s: &str) -> bool {
    static DATE_TIME: OnceLock<regex::Regex> = OnceLock::new();
    static UUID: OnceLock<regex::Regex> = OnceLock::new();
    static UUID3: OnceLock<regex::Regex> = OnceLock::new();
    static UUID4: OnceLock<regex::Regex> = OnceLock::new();
    static UUID5: OnceLock<regex::Regex> = OnceLock::new();
    static BASE64: OnceLock<regex::Regex> = OnceLock::new();
    static HOSTNAME: OnceLock<regex::Regex> = OnceLock::new();
    static SHORT: OnceLock<regex::Regex> = OnceLock::new();
    static MAC: OnceLock<regex::Regex> = OnceLock::new();
    static HEX: OnceLock<regex::Regex> = OnceLock::new();
    static BSON: OnceLock<regex::Regex> = OnceLock::new();
    static DURATION: OnceLock<regex::Regex> = OnceLock::new();
    match normalized(format).as_str() {
        "datetime" => {
            if s.len() < 4 {
                return false;
            }
            let lower = s.to_ascii_lowercase();
            let mut parts = lower.split('t');
            let (Some(date), Some(time)) = (parts.next(), parts.next()) else {
                return false;
            };
            if !is_date(date) {
                return false;
            }
            let rx = re(
                &DATE_TIME,
                r"^([0-9]{2}):([0-9]{2}):([0-9]{2})(.[0-9]+)?(z|([+-][0-9]{2}:[0-9]{2}))$",
            );
            match rx.captures(time) {
                Some(c) => &c[1] <= "23" && &c[2] <= "59" && &c[3] <= "59",
                None => false,
            }
        }
        "date" => is_date(s),
        "uuid" => re(&UUID, r"(?i)^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$").is_match(s),
        "uuid3" => re(&UUID3, r"(?i)^[0-9a-f]{8}-?[0-9a-f]{4}-?3[0-9a-f]{3}-?[0-9a-f]{4}-?[0-9a-f]{12}$").is_match(s),
        "uuid4" => re(&UUID4, r"(?i)^[0-9a-f]{8}-?[0-9a-f]{4}-?4[0-9a-f]{3}-?[89ab][0-9a-f]{3}-?[0-9a-f]{12}$").is_match(s),
        "uuid5" => re(&UUID5, r"(?i)^[0-9a-f]{8}-?[0-9a-f]{4}-?5[0-9a-f]{3}-?[89ab][0-9a-f]{3}-?[0-9a-f]{12}$").is_match(s),
        "byte" => re(&BASE64, r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=|[A-Za-z0-9+/]{4})$").is_match(s),
        "hostname" => {
            re(&HOSTNAME, r"^([a-zA-Z0-9\p{S}\p{L}]((-?[a-zA-Z0-9\p{S}\p{L}]{0,62})?)|([a-zA-Z0-9\p{S}\p{L}](([a-zA-Z0-9-\p{S}\p{L}]{0,61}[a-zA-Z0-9\p{S}\p{L}])?)(\.)){1,}([a-zA-Z\p{L}]){2,63})$").is_match(s)
                && s.len() <= 255
                && s.split('.').all(|p| p.len() <= 63)
        }
        "ipv4" => s.parse::<std::net::Ipv4Addr>().is_ok(),
        "ipv6" => s.parse::<std::net::Ipv6Addr>().is_ok(),
        "cidr" => match s.split_once('/') {
            Some((ip, bits)) => match (ip.parse::<std::net::IpAddr>(), bits.parse::<u8>()) {
                (Ok(std::net::IpAddr::V4(_)), Ok(b)) => b <= 32,
                (Ok(std::net::IpAddr::V6(_)), Ok(b)) => b <= 128,
                _ => false,
            },
            None => false,
        },
        "mac" => re(&MAC, r"^([0-9A-Fa-f]{2}[:-]){5,19}[0-9A-Fa-f]{2}$|^([0-9A-Fa-f]{4}\.){2,9}[0-9A-Fa-f]{4}$").is_match(s),
        "email" => match s.rsplit_once('@') {
            Some((local, domain)) => {
                !local.is_empty() && !domain.is_empty() && !s.chars().any(char::is_whitespace)
            }
            None => false,
        },
        "uri" => {
            // Go's url.ParseRequestURI: an absolute URI or an absolute path.
            !s.is_empty()
                && !s.chars().any(|c| c.is_whitespace() || c.is_control())
                && (s.starts_with('/')
                    || s.split_once(':').is_some_and(|(scheme, _)| {
                        scheme.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
                            && scheme
                                .chars()
                                .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
                    }))
        }
        "duration" => {
            go_duration(s)
                || re(&DURATION, r"^\s*(\d+\s*[A-Za-zµ]+\s*)+$").is_match(s)
        }
        "k8sshortname" => s.len() <= 63 && re(&SHORT, r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$").is_match(s),
        "k8slongname" => {
            s.len() <= 253
                && s.split('.').all(|p| re(&SHORT, r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$").is_match(p))
        }
        "hexcolor" => re(&HEX, r"^#?([0-9a-fA-F]{3}|[0-9a-fA-F]{6})$").is_match(s),
        "bsonobjectid" => re(&BSON, r"^[0-9a-fA-F]{24}$").is_match(s),
        _ => true,
    }
}

fn is_date(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return false;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        s.get(r)
            .filter(|d| d.bytes().all(|c| c.is_ascii_digit()))
            .and_then(|d| d.parse().ok())
    };
    let (Some(y), Some(m), Some(d)) = (num(0..4), num(5..7), num(8..10)) else {
        return false;
    };
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let days = match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    (1..=days).contains(&d)
}

/// Go's `time.ParseDuration` grammar: an optional sign, then one or more decimal numbers
/// each with a unit (`ns`, `us`, `µs`, `ms`, `s`, `m`, `h`), or `0`.
pub fn go_duration(s: &str) -> bool {
    let s = s.strip_prefix(['-', '+']).unwrap_or(s);
    if s == "0" {
        return true;
    }
    if s.is_empty() {
        return false;
    }
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let num = &rest[..digits];
        if num.is_empty() || num == "." || num.matches('.').count() > 1 {
            return false;
        }
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        if !matches!(
            &rest[..unit_len],
            "ns" | "us" | "µs" | "μs" | "ms" | "s" | "m" | "h"
        ) {
            return false;
        }
        rest = &rest[unit_len..];
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn formats_the_server_knows_per_type() {
        assert!(unrecognized("integer", "uint32"));
        assert!(!unrecognized("integer", "int32"));
        assert!(!unrecognized("integer", "int64"));
        assert!(!unrecognized("string", "date-time"));
        assert!(!unrecognized("string", "k8s-short-name"));
        assert!(unrecognized("string", "int32"));
        assert!(unrecognized("number", "int32"));
        assert!(!unrecognized("number", "double"));
        assert!(unrecognized("boolean", "bool"));
        assert!(!unrecognized("integer", ""));
    }

    #[test]
    fn warnings_name_each_unknown_format_in_every_version() {
        let crd = json!({"spec": {"versions": [
            {"name": "v1", "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                "a": {"type": "integer", "format": "uint32"},
                "b": {"type": "array", "items": {"type": "integer", "format": "uint32"}},
                "c": {"type": "string", "format": "date-time"},
                "d": {"type": "object", "additionalProperties": {"type": "string", "format": "nope"}},
            }}}}
        ]}});
        assert_eq!(
            crd_format_warnings(&crd),
            [
                "unrecognized format \"uint32\"",
                "unrecognized format \"uint32\"",
                "unrecognized format \"nope\""
            ]
        );
    }

    #[test]
    fn string_values_against_formats() {
        assert!(valid("date-time", "2024-05-01T10:00:00Z"));
        assert!(valid("date-time", "2024-05-01T10:00:00.123+02:00"));
        assert!(!valid("date-time", "2024-05-01 10:00:00"));
        assert!(!valid("date-time", "2024-02-30T10:00:00Z"));
        assert!(!valid("date-time", "yesterday"));
        assert!(valid("date", "2024-02-29"));
        assert!(!valid("date", "2023-02-29"));
        assert!(valid("duration", "1h30m"));
        assert!(valid("duration", "3 days"));
        assert!(!valid("duration", "soon"));
        assert!(valid("ipv4", "10.0.0.1"));
        assert!(!valid("ipv4", "10.0.0.256"));
        assert!(valid("cidr", "10.0.0.0/8"));
        assert!(valid("byte", "aGVsbG8="));
        assert!(!valid("byte", "not base64!"));
        assert!(valid("k8s-short-name", "my-name"));
        assert!(!valid("k8s-short-name", "My-Name"));
        assert!(valid("isbn", "anything"));
    }
}
