//! Writing OpenMetrics text by hand, for what the `prometheus-client` crate cannot hold: a
//! histogram whose bucket counts come from elsewhere (the workers' request durations) and the
//! app's own metrics as the workers' prom-client reports them.

use std::fmt::Write;

/// `[a-zA-Z_:][a-zA-Z0-9_:]*`
pub(crate) fn valid_metric_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_' || b == b':')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':')
}

/// `[a-zA-Z_][a-zA-Z0-9_]*`
pub(crate) fn valid_label_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// A label value or a HELP text: backslash, double quote and newline escaped.
pub(crate) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// A sample value.
pub(crate) fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v}")
    }
}

/// A bucket bound or a quantile in OpenMetrics' canonical form (`1.0`, `0.005`, `+Inf`).
pub(crate) fn canonical(v: f64) -> String {
    if v.is_finite() && v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.1}")
    } else {
        number(v)
    }
}

/// `# HELP` and `# TYPE` of family `name`.
pub(crate) fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {}", escape(help));
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// One sample line; label values are escaped here.
pub(crate) fn sample<'a>(
    out: &mut String,
    name: &str,
    labels: impl IntoIterator<Item = (&'a str, &'a str)>,
    value: f64,
) {
    out.push_str(name);
    let mut first = true;
    for (k, v) in labels {
        out.push(if first { '{' } else { ',' });
        first = false;
        let _ = write!(out, "{k}=\"{}\"", escape(v));
    }
    if !first {
        out.push('}');
    }
    out.push(' ');
    out.push_str(&number(value));
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_values_and_escapes() {
        assert!(valid_metric_name("http_requests_total"));
        assert!(valid_metric_name("a:b"));
        assert!(!valid_metric_name("1a"));
        assert!(!valid_metric_name("a-b"));
        assert!(!valid_metric_name(""));
        assert!(valid_label_name("_x1"));
        assert!(!valid_label_name("a:b"));
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        assert_eq!(number(f64::NAN), "NaN");
        assert_eq!(number(f64::NEG_INFINITY), "-Inf");
        assert_eq!(number(400.0), "400");
        assert_eq!(number(0.25), "0.25");
        assert_eq!(canonical(1.0), "1.0");
        assert_eq!(canonical(0.005), "0.005");
        assert_eq!(canonical(f64::INFINITY), "+Inf");
        let mut out = String::new();
        header(&mut out, "x", "gauge", "a\nb");
        sample(&mut out, "x", [("a", "1"), ("b", "\"")], 2.5);
        sample(&mut out, "x", [], 1.0);
        assert_eq!(
            out,
            "# HELP x a\\nb\n# TYPE x gauge\nx{a=\"1\",b=\"\\\"\"} 2.5\nx 1\n"
        );
    }
}
