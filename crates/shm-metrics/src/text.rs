//! The Prometheus text exposition format (0.0.4), numbers printed as
//! prometheus_client prints them.

use prometheus::proto::{LabelPair, MetricFamily, MetricType};

use crate::pyfmt::float_to_go_string;

/// The Content-Type of [`encode_text`]'s output.
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Appends the text exposition of `families` to `out`, as prometheus_client's
/// `generate_latest` writes it: floats via `floatToGoString` (`1.0`, `1e+06`,
/// `+Inf`, `NaN`), labels sorted by name, `le` bounds as Python prints them,
/// counts printed as floats. Empty families are skipped.
pub fn encode_text(families: &[MetricFamily], out: &mut Vec<u8>) {
    // Flushed into `out` past 64 KiB (checked after each series): allocated
    // once, and grown only by a series of more than 8 KiB of text.
    const FLUSH: usize = 1 << 16;
    let mut s = String::with_capacity(FLUSH + 8192);
    // Reused for every bucket bound and quantile.
    let mut bound = String::new();
    for f in families {
        if f.get_metric().is_empty() {
            continue;
        }
        let name = f.name();
        let typ = match f.get_field_type() {
            MetricType::COUNTER => "counter",
            MetricType::GAUGE => "gauge",
            MetricType::HISTOGRAM => "histogram",
            MetricType::SUMMARY => "summary",
            MetricType::UNTYPED => "untyped",
        };
        s.push_str("# HELP ");
        s.push_str(name);
        s.push(' ');
        escape(&mut s, f.help(), false);
        s.push_str("\n# TYPE ");
        s.push_str(name);
        s.push(' ');
        s.push_str(typ);
        s.push('\n');
        for m in f.get_metric() {
            let labels = m.get_label();
            let ts = m.timestamp_ms();
            match f.get_field_type() {
                MetricType::COUNTER => sample(
                    &mut s,
                    name,
                    "",
                    labels,
                    None,
                    m.get_counter().get_value(),
                    ts,
                ),
                MetricType::GAUGE => sample(
                    &mut s,
                    name,
                    "",
                    labels,
                    None,
                    m.get_gauge().get_value(),
                    ts,
                ),
                #[allow(deprecated)]
                MetricType::UNTYPED => sample(
                    &mut s,
                    name,
                    "",
                    labels,
                    None,
                    m.get_untyped().get_value(),
                    ts,
                ),
                MetricType::HISTOGRAM => {
                    let h = m.get_histogram();
                    let mut inf_seen = false;
                    for b in h.get_bucket() {
                        bound.clear();
                        float_to_go_string(&mut bound, b.upper_bound());
                        inf_seen |= b.upper_bound() == f64::INFINITY;
                        let v = b.cumulative_count() as f64;
                        sample(&mut s, name, "_bucket", labels, Some(("le", &bound)), v, ts);
                    }
                    let count = h.get_sample_count() as f64;
                    if !inf_seen {
                        sample(
                            &mut s,
                            name,
                            "_bucket",
                            labels,
                            Some(("le", "+Inf")),
                            count,
                            ts,
                        );
                    }
                    sample(&mut s, name, "_count", labels, None, count, ts);
                    sample(&mut s, name, "_sum", labels, None, h.get_sample_sum(), ts);
                }
                MetricType::SUMMARY => {
                    let sm = m.get_summary();
                    let q = &mut bound;
                    for quantile in sm.get_quantile() {
                        q.clear();
                        float_to_go_string(q, quantile.quantile());
                        sample(
                            &mut s,
                            name,
                            "",
                            labels,
                            Some(("quantile", q)),
                            quantile.value(),
                            ts,
                        );
                    }
                    sample(
                        &mut s,
                        name,
                        "_count",
                        labels,
                        None,
                        sm.sample_count() as f64,
                        ts,
                    );
                    sample(&mut s, name, "_sum", labels, None, sm.sample_sum(), ts);
                }
            }
            if s.len() > FLUSH {
                out.extend_from_slice(s.as_bytes());
                s.clear();
            }
        }
    }
    out.extend_from_slice(s.as_bytes());
}

fn escape(out: &mut String, s: &str, quote: bool) {
    if !s
        .bytes()
        .any(|b| b == b'\\' || b == b'\n' || (quote && b == b'"'))
    {
        out.push_str(s);
        return;
    }
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' if quote => out.push_str("\\\""),
            c => out.push(c),
        }
    }
}

fn sample(
    out: &mut String,
    name: &str,
    suffix: &str,
    labels: &[LabelPair],
    extra: Option<(&str, &str)>,
    value: f64,
    timestamp_ms: i64,
) {
    out.push_str(name);
    out.push_str(suffix);
    if !labels.is_empty() || extra.is_some() {
        out.push('{');
        let mut first = true;
        let mut extra = extra;
        let mut label = |out: &mut String, k: &str, v: &str| {
            if !first {
                out.push(',');
            }
            first = false;
            out.push_str(k);
            out.push_str("=\"");
            escape(out, v, true);
            out.push('"');
        };
        for l in labels {
            // Python sorts every label by name, `le` and `quantile` included.
            if let Some((k, v)) = extra
                && k < l.name()
            {
                label(out, k, v);
                extra = None;
            }
            label(out, l.name(), l.value());
        }
        if let Some((k, v)) = extra {
            label(out, k, v);
        }
        out.push('}');
    }
    out.push(' ');
    float_to_go_string(out, value);
    if timestamp_ms != 0 {
        out.push(' ');
        out.push_str(&timestamp_ms.to_string());
    }
    out.push('\n');
}
