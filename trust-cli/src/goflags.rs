//! Flag values in the style `linkerd check` forwards them (Go's `flag`/`pflag` formatting):
//! durations like `5m0s`, booleans like `--proxy=false`, string arrays like `--as-group=[]`.

use std::time::Duration;

/// Parses a Go `time.Duration` string: an optional sign-less sequence of decimal numbers with
/// units `ns`, `us`/`µs`, `ms`, `s`, `m`, `h` (`5m0s`, `1h30m`, `1.5s`, `300ms`), or `0`.
/// Negative durations are refused: every duration here is a budget.
pub fn parse_go_duration(s: &str) -> Result<Duration, String> {
    let err =
        || format!("invalid duration {s:?}: expected a Go duration such as 5m0s, 30s or 1h30m");
    let t = s.trim();
    if t == "0" {
        return Ok(Duration::ZERO);
    }
    if t.is_empty() || t.starts_with('-') {
        return Err(err());
    }
    let t = t.strip_prefix('+').unwrap_or(t);
    let mut total = 0f64;
    let mut rest = t;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(err)?;
        if num_len == 0 {
            return Err(err());
        }
        let value: f64 = rest[..num_len].parse().map_err(|_| err())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let factor = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(err()),
        };
        total += value * factor;
        rest = &rest[unit_len..];
    }
    if !total.is_finite() || total > 1e12 {
        return Err(err());
    }
    Ok(Duration::from_secs_f64(total))
}

/// A duration as the user wrote it, or any Go duration: accepts everything
/// [`parse_go_duration`] accepts, plus the proxy style `10d`.
pub fn parse_duration_flag(s: &str) -> Result<Duration, String> {
    if let Some(days) = s.trim().strip_suffix('d') {
        if let Ok(n) = days.parse::<u64>() {
            return Ok(Duration::from_secs(n * 86_400));
        }
    }
    parse_go_duration(s)
}

/// Formats a duration the way Go prints it (`5m0s`, `1h0m0s`, `300ms`, `0s`).
pub fn format_go_duration(d: Duration) -> String {
    let total_ms = d.as_millis();
    if total_ms == 0 {
        return "0s".into();
    }
    if total_ms < 1000 {
        return format!("{total_ms}ms");
    }
    let secs = d.as_secs();
    let frac = d.subsec_millis();
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let s = if frac > 0 {
        format!("{s}.{:03}", frac).trim_end_matches('0').to_string() + "s"
    } else {
        format!("{s}s")
    };
    if h > 0 {
        format!("{h}h{m}m{s}")
    } else if m > 0 {
        format!("{m}m{s}")
    } else {
        s
    }
}

/// Parses a boolean as Go's `strconv.ParseBool` does.
pub fn parse_go_bool(s: &str) -> Result<bool, String> {
    match s {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        other => Err(format!("invalid boolean {other:?}: expected true or false")),
    }
}

/// Expands string-array flag values: `[]` is empty, `[a,b]` is two values, anything else is
/// itself (pflag prints string arrays in brackets when forwarding them).
pub fn expand_string_array(values: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for v in values {
        match v.strip_prefix('[').and_then(|v| v.strip_suffix(']')) {
            Some(inner) => out.extend(
                inner
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_string),
            ),
            None if v.is_empty() => {}
            None => out.push(v.clone()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("5m0s"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_go_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_go_duration("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_go_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_go_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_go_duration("300ms"), Ok(Duration::from_millis(300)));
        for bad in ["", "5", "-1s", "5x", "m", "1..2s", "s5"] {
            assert!(parse_go_duration(bad).is_err(), "{bad:?} must be refused");
        }
        assert_eq!(
            parse_duration_flag("60d"),
            Ok(Duration::from_secs(60 * 86_400))
        );
        assert_eq!(parse_duration_flag("10s"), Ok(Duration::from_secs(10)));
    }

    #[test]
    fn go_duration_format_round_trips() {
        for (d, s) in [
            (Duration::from_secs(300), "5m0s"),
            (Duration::ZERO, "0s"),
            (Duration::from_secs(3600), "1h0m0s"),
            (Duration::from_millis(1500), "1.5s"),
            (Duration::from_millis(300), "300ms"),
        ] {
            assert_eq!(format_go_duration(d), s);
            assert_eq!(parse_go_duration(s), Ok(d));
        }
    }

    #[test]
    fn go_bools_and_arrays() {
        assert_eq!(parse_go_bool("false"), Ok(false));
        assert_eq!(parse_go_bool("T"), Ok(true));
        assert!(parse_go_bool("yes").is_err());
        let v = |s: &[&str]| s.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(expand_string_array(&v(&["[]"])).is_empty());
        assert_eq!(
            expand_string_array(&v(&["[a,b]", "c"])),
            v(&["a", "b", "c"])
        );
    }
}
