//! `linkerd check`'s output formats, byte for byte: the table (default), `short` and `json`
//! renderings of `pkg/healthcheck/healthcheck_output.go`.

use serde::{Deserialize, Serialize};

/// The result of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Success,
    Warning,
    Error,
}

/// One check's final result, as every format needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckResult {
    pub category: String,
    pub description: String,
    /// Full hint URL; shown only for failed or warned checks.
    pub hint: Option<String>,
    /// Why the check failed; always present when `outcome` is not `Success`.
    pub error: Option<String>,
    pub outcome: Outcome,
}

impl CheckResult {
    pub fn failed(&self) -> bool {
        self.outcome != Outcome::Success
    }
}

/// Output format of `check`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CheckOutput {
    Table,
    Json,
    Short,
}

/// Whether the run succeeded (no failed non-warning check) and whether any warning fired.
pub fn summary(results: &[CheckResult]) -> (bool, bool) {
    let success = !results.iter().any(|r| r.outcome == Outcome::Error);
    let warning = results.iter().any(|r| r.outcome == Outcome::Warning);
    (success, warning)
}

/// Symbols, optionally coloured as `fatih/color` does on a terminal (bold green, yellow, red).
#[derive(Debug, Clone, Copy)]
pub struct Symbols {
    pub color: bool,
}

impl Symbols {
    fn paint(&self, code: &str, s: &str) -> String {
        if self.color {
            format!("\x1b[{code};1m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    }
    pub fn ok(&self) -> String {
        self.paint("32", "\u{221A}")
    }
    pub fn warn(&self) -> String {
        self.paint("33", "\u{203C}")
    }
    pub fn fail(&self) -> String {
        self.paint("31", "\u{00D7}")
    }
    fn status(&self, o: Outcome) -> String {
        match o {
            Outcome::Success => self.ok(),
            Outcome::Warning => self.warn(),
            Outcome::Error => self.fail(),
        }
    }
}

fn print_category(out: &mut String, last: &mut Option<String>, category: &str) {
    if last.as_deref() == Some(category) {
        return;
    }
    if last.is_some() {
        out.push('\n');
    }
    out.push_str(category);
    out.push('\n');
    out.push_str(&"-".repeat(category.len()));
    out.push('\n');
    *last = Some(category.to_string());
}

fn print_result(out: &mut String, sym: &Symbols, r: &CheckResult) {
    out.push_str(&format!("{} {}\n", sym.status(r.outcome), r.description));
    if r.outcome == Outcome::Success {
        return;
    }
    out.push_str(&format!("    {}\n", r.error.as_deref().unwrap_or_default()));
    if let Some(hint) = r.hint.as_deref().filter(|h| !h.is_empty()) {
        out.push_str(&format!("    see {hint} for hints\n"));
    }
}

fn status_line(out: &mut String, sym: &Symbols, success: bool) {
    let s = if success { sym.ok() } else { sym.fail() };
    out.push_str(&format!("Status check results are {s}\n"));
}

/// Renders the table and short formats incrementally, so that results can be printed as each
/// check finishes; the concatenation of [`TextPrinter::observe`] outputs and
/// [`TextPrinter::finish`] is the whole rendering.
#[derive(Debug)]
pub struct TextPrinter {
    short: bool,
    sym: Symbols,
    last: Option<String>,
    success: bool,
    warning: bool,
}

impl TextPrinter {
    pub fn new(short: bool, sym: Symbols) -> Self {
        Self {
            short,
            sym,
            last: None,
            success: true,
            warning: false,
        }
    }

    /// The text for one more result.
    pub fn observe(&mut self, r: &CheckResult) -> String {
        match r.outcome {
            Outcome::Error => self.success = false,
            Outcome::Warning => self.warning = true,
            Outcome::Success => {}
        }
        let mut out = String::new();
        if self.short && !r.failed() {
            return out;
        }
        print_category(&mut out, &mut self.last, &r.category);
        print_result(&mut out, &self.sym, r);
        out
    }

    /// The closing text. As in Linkerd, `short` prints the blank line before the status line
    /// only when a warning fired.
    pub fn finish(&self) -> String {
        let mut out = String::new();
        if !self.short || self.warning {
            out.push('\n');
        }
        status_line(&mut out, &self.sym, self.success);
        out
    }
}

/// The default (`table`) format: every check under its category header, a blank line, the
/// status line.
pub fn render_table(results: &[CheckResult], sym: Symbols) -> String {
    render_text(results, false, sym)
}

/// `-o short`: only failed and warned checks under their headers, then the status line.
pub fn render_short(results: &[CheckResult], sym: Symbols) -> String {
    render_text(results, true, sym)
}

fn render_text(results: &[CheckResult], short: bool, sym: Symbols) -> String {
    let mut p = TextPrinter::new(short, sym);
    let mut out: String = results.iter().map(|r| p.observe(r)).collect();
    out.push_str(&p.finish());
    out
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
pub struct JsonOutput {
    pub success: bool,
    pub categories: Vec<JsonCategory>,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
pub struct JsonCategory {
    #[serde(rename = "categoryName")]
    pub category_name: String,
    pub checks: Vec<JsonCheck>,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
pub struct JsonCheck {
    pub description: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub hint: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub error: String,
    pub result: Outcome,
}

/// `-o json`: Go's `json.MarshalIndent(.., "", "  ")` of Linkerd's check output, with a trailing
/// newline. Hint and error only on failed or warned checks.
pub fn render_json(results: &[CheckResult]) -> String {
    let mut categories: Vec<JsonCategory> = Vec::new();
    for r in results {
        if categories.last().map(|c| c.category_name.as_str()) != Some(r.category.as_str()) {
            categories.push(JsonCategory {
                category_name: r.category.clone(),
                checks: Vec::new(),
            });
        }
        let failed = r.failed();
        let check = JsonCheck {
            description: r.description.clone(),
            hint: if failed {
                r.hint.clone().unwrap_or_default()
            } else {
                String::new()
            },
            error: if failed {
                r.error.clone().unwrap_or_default()
            } else {
                String::new()
            },
            result: r.outcome,
        };
        if let Some(c) = categories.last_mut() {
            c.checks.push(check);
        }
    }
    let out = JsonOutput {
        success: summary(results).0,
        categories,
    };
    // Serialising plain structs of strings and bools cannot fail.
    let text = serde_json::to_string_pretty(&out).unwrap_or_else(|_| "{}".into());
    format!("{}\n", go_html_escape(&text))
}

/// Go's encoder escapes `<`, `>`, `&`, U+2028 and U+2029 inside strings. In our output these
/// characters can only occur inside strings, so a textual pass is exact.
fn go_html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out
}

/// What `linkerd check` makes of an extension's JSON (`parseJSONCheckOutput` followed by its
/// own success computation): a check fails only when it carries a non-empty `error`; it is a
/// warning when its `result` is `warning`. Returns the recomputed results and success.
pub fn parse_like_linkerd(stdout: &str) -> Result<(Vec<CheckResult>, bool), String> {
    let parsed: JsonOutput = serde_json::from_str(stdout)
        .map_err(|e| format!("invalid extension check output (JSON object expected): {e}"))?;
    let mut results = Vec::new();
    for cat in parsed.categories {
        for c in cat.checks {
            let outcome = if c.error.is_empty() {
                Outcome::Success
            } else if c.result == Outcome::Warning {
                Outcome::Warning
            } else {
                Outcome::Error
            };
            results.push(CheckResult {
                category: cat.category_name.clone(),
                description: c.description,
                hint: (!c.hint.is_empty()).then_some(c.hint),
                error: (!c.error.is_empty()).then_some(c.error),
                outcome,
            });
        }
    }
    let success = summary(&results).0;
    Ok((results, success))
}
