//! The Prometheus text exposition format (0.0.4), numbers printed as
//! prometheus_client prints them.

use prometheus::proto::{MetricFamily, MetricType};

use crate::pyfmt::float_to_go_string;

/// The Content-Type of [`encode_text`]'s output.
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Appends the text exposition of `families` to `out`, as prometheus_client's
/// `generate_latest` writes it: floats via `floatToGoString` (`1.0`, `1e+06`,
/// `+Inf`, `NaN`), labels sorted by name, `le` bounds as Python prints them,
/// counts printed as floats. Empty families are skipped.
pub fn encode_text(families: &[MetricFamily], out: &mut Vec<u8>) {
    let mut w = TextWriter::new(out);
    for f in families {
        if f.get_metric().is_empty() {
            continue;
        }
        let name = f.name();
        w.header(name, f.help(), f.get_field_type());
        for m in f.get_metric() {
            let labels = m.get_label();
            let pairs = || labels.iter().map(|l| (l.name(), l.value()));
            let ts = m.timestamp_ms();
            match f.get_field_type() {
                MetricType::COUNTER => w.value(name, pairs(), m.get_counter().get_value(), ts),
                MetricType::GAUGE => w.value(name, pairs(), m.get_gauge().get_value(), ts),
                #[allow(deprecated)]
                MetricType::UNTYPED => w.value(name, pairs(), m.get_untyped().get_value(), ts),
                MetricType::HISTOGRAM => {
                    let h = m.get_histogram();
                    w.histogram(
                        name,
                        pairs,
                        h.get_bucket()
                            .iter()
                            .map(|b| (b.upper_bound(), b.cumulative_count())),
                        h.get_sample_count(),
                        h.get_sample_sum(),
                        ts,
                    );
                }
                MetricType::SUMMARY => {
                    let sm = m.get_summary();
                    w.summary(
                        name,
                        pairs,
                        sm.get_quantile().iter().map(|q| (q.quantile(), q.value())),
                        sm.sample_count(),
                        sm.sample_sum(),
                        ts,
                    );
                }
            }
        }
    }
}

/// Writes exposition text into `out`: through a buffer flushed into `out`
/// past 64 KiB (checked after each series), allocated once and grown only
/// by a series of more than 8 KiB of text; the rest when dropped. Shared by
/// [`encode_text`] and the collector's direct text output, so both print
/// alike by construction.
pub(crate) struct TextWriter<'o> {
    out: &'o mut Vec<u8>,
    s: String,
    /// Reused for every bucket bound and quantile.
    bound: String,
}

const FLUSH: usize = 1 << 16;

impl<'o> TextWriter<'o> {
    pub(crate) fn new(out: &'o mut Vec<u8>) -> TextWriter<'o> {
        TextWriter {
            out,
            s: String::with_capacity(FLUSH + 8192),
            bound: String::new(),
        }
    }

    fn series_done(&mut self) {
        if self.s.len() > FLUSH {
            self.out.extend_from_slice(self.s.as_bytes());
            self.s.clear();
        }
    }

    /// `# HELP` and `# TYPE` of a family.
    pub(crate) fn header(&mut self, name: &str, help: &str, t: MetricType) {
        let typ = match t {
            MetricType::COUNTER => "counter",
            MetricType::GAUGE => "gauge",
            MetricType::HISTOGRAM => "histogram",
            MetricType::SUMMARY => "summary",
            MetricType::UNTYPED => "untyped",
        };
        let s = &mut self.s;
        s.push_str("# HELP ");
        s.push_str(name);
        s.push(' ');
        escape(s, help, false);
        s.push_str("\n# TYPE ");
        s.push_str(name);
        s.push(' ');
        s.push_str(typ);
        s.push('\n');
    }

    /// A counter, gauge or untyped series.
    pub(crate) fn value<'l>(
        &mut self,
        name: &str,
        labels: impl Iterator<Item = (&'l str, &'l str)>,
        v: f64,
        ts: i64,
    ) {
        sample(&mut self.s, name, "", labels, None, v, ts);
        self.series_done();
    }

    /// A histogram series: its buckets (bound, cumulative count) in order,
    /// `+Inf` added when missing, `_count` and `_sum`; counts as floats.
    pub(crate) fn histogram<'l, I: Iterator<Item = (&'l str, &'l str)>>(
        &mut self,
        name: &str,
        labels: impl Fn() -> I,
        buckets: impl Iterator<Item = (f64, u64)>,
        count: u64,
        sum: f64,
        ts: i64,
    ) {
        let mut inf_seen = false;
        for (upper, cumulative) in buckets {
            self.bound.clear();
            float_to_go_string(&mut self.bound, upper);
            inf_seen |= upper == f64::INFINITY;
            let v = cumulative as f64;
            let le = Some(("le", self.bound.as_str()));
            sample(&mut self.s, name, "_bucket", labels(), le, v, ts);
        }
        let count = count as f64;
        if !inf_seen {
            let le = Some(("le", "+Inf"));
            sample(&mut self.s, name, "_bucket", labels(), le, count, ts);
        }
        sample(&mut self.s, name, "_count", labels(), None, count, ts);
        sample(&mut self.s, name, "_sum", labels(), None, sum, ts);
        self.series_done();
    }

    /// A summary series: its quantiles (quantile, value), `_count`, `_sum`.
    pub(crate) fn summary<'l, I: Iterator<Item = (&'l str, &'l str)>>(
        &mut self,
        name: &str,
        labels: impl Fn() -> I,
        quantiles: impl Iterator<Item = (f64, f64)>,
        count: u64,
        sum: f64,
        ts: i64,
    ) {
        for (quantile, value) in quantiles {
            self.bound.clear();
            float_to_go_string(&mut self.bound, quantile);
            let q = Some(("quantile", self.bound.as_str()));
            sample(&mut self.s, name, "", labels(), q, value, ts);
        }
        sample(
            &mut self.s,
            name,
            "_count",
            labels(),
            None,
            count as f64,
            ts,
        );
        sample(&mut self.s, name, "_sum", labels(), None, sum, ts);
        self.series_done();
    }
}

impl Drop for TextWriter<'_> {
    fn drop(&mut self) {
        self.out.extend_from_slice(self.s.as_bytes());
    }
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

fn sample<'l>(
    out: &mut String,
    name: &str,
    suffix: &str,
    labels: impl Iterator<Item = (&'l str, &'l str)>,
    extra: Option<(&str, &str)>,
    value: f64,
    timestamp_ms: i64,
) {
    out.push_str(name);
    out.push_str(suffix);
    let mut labels = labels.peekable();
    if labels.peek().is_some() || extra.is_some() {
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
        for (name, value) in labels {
            // Python sorts every label by name, `le` and `quantile` included.
            if let Some((k, v)) = extra
                && k < name
            {
                label(out, k, v);
                extra = None;
            }
            label(out, name, value);
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
        out.push_str(itoa::Buffer::new().format(timestamp_ms));
    }
    out.push('\n');
}
