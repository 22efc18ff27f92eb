//! A strict reader of the Prometheus text format (0.0.4), as a scraper (Prometheus, the Datadog
//! Agent's OpenMetrics check) reads `/metrics`: every line must parse, every sample must belong
//! to a family declared by `# TYPE`, and histograms must be whole.

use std::collections::{BTreeMap, HashMap};

/// Every sample, by series: `name{label="value",…}` with the labels sorted by name.
#[derive(Debug, Default)]
pub struct Exposition {
    pub samples: BTreeMap<String, f64>,
    pub types: HashMap<String, String>,
}

impl Exposition {
    /// The value of `name` with exactly `labels`.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples.get(&series(name, labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())).copied()
    }

    /// [`Exposition::value`], 0 when the series does not exist.
    pub fn count(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.value(name, labels).unwrap_or(0.0)
    }

    /// Every series of the family `name` (samples named exactly `name`).
    pub fn series_of(&self, name: &str) -> Vec<&str> {
        self.samples.keys().filter(|k| k.split('{').next() == Some(name)).map(String::as_str).collect()
    }
}

fn series(name: &str, mut labels: Vec<(String, String)>) -> String {
    labels.sort();
    if labels.is_empty() {
        return name.to_string();
    }
    let inner: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    format!("{name}{{{}}}", inner.join(","))
}

fn valid_name(name: &str, colons: bool) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || (colons && c == ':'))
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || (colons && c == ':'))
}

/// Parses `text`, panicking with the offending line on anything a scraper would reject.
pub fn parse(text: &str) -> Exposition {
    let mut exposition = Exposition::default();
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix("# ") {
            let mut parts = comment.splitn(3, ' ');
            match (parts.next(), parts.next(), parts.next()) {
                (Some("TYPE"), Some(name), Some(kind)) => {
                    assert!(valid_name(name, true), "bad metric name: {line}");
                    assert!(
                        ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                        "bad type: {line}"
                    );
                    assert!(
                        exposition.types.insert(name.to_string(), kind.to_string()).is_none(),
                        "TYPE twice: {line}"
                    );
                }
                (Some("HELP"), Some(name), _) => assert!(valid_name(name, true), "bad metric name: {line}"),
                _ => {}
            }
            continue;
        }
        let (name, labels, rest) = match line.find('{') {
            Some(open) => {
                let close = line.rfind('}').unwrap_or_else(|| panic!("unclosed labels: {line}"));
                (&line[..open], parse_labels(&line[open + 1..close], line), line[close + 1..].trim())
            }
            None => {
                let (name, rest) = line.split_once(' ').unwrap_or_else(|| panic!("no value: {line}"));
                (name, Vec::new(), rest.trim())
            }
        };
        assert!(valid_name(name, true), "bad metric name: {line}");
        let value = rest.split(' ').next().unwrap_or_default();
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            other => other.parse().unwrap_or_else(|_| panic!("bad value: {line}")),
        };
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| {
                name.strip_suffix(suffix)
                    .filter(|base| exposition.types.get(*base).map(String::as_str) == Some("histogram"))
            })
            .unwrap_or(name);
        assert!(exposition.types.contains_key(family), "a sample before its # TYPE: {line}");
        assert!(exposition.samples.insert(series(name, labels), value).is_none(), "a series twice: {line}");
    }
    check_histograms(&exposition);
    exposition
}

fn parse_labels(inner: &str, line: &str) -> Vec<(String, String)> {
    let mut labels = Vec::new();
    let mut rest = inner;
    while !rest.is_empty() {
        let (name, after) = rest.split_once("=\"").unwrap_or_else(|| panic!("bad label: {line}"));
        assert!(valid_name(name, false), "bad label name {name:?}: {line}");
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next() {
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c @ ('\\' | '"'))) => value.push(c),
                    _ => panic!("bad escape: {line}"),
                },
                Some((at, '"')) => break at,
                Some((_, c)) => value.push(c),
                None => panic!("unterminated label value: {line}"),
            }
        };
        labels.push((name.to_string(), value));
        rest = after[end + 1..].strip_prefix(',').unwrap_or(&after[end + 1..]);
    }
    labels
}

/// Buckets rise with `le`, and the `+Inf` bucket equals `_count`.
fn check_histograms(exposition: &Exposition) {
    for (family, _) in exposition.types.iter().filter(|(_, kind)| *kind == "histogram") {
        let mut by_series: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
        for (key, value) in &exposition.samples {
            let Some(labels) = key.strip_prefix(&format!("{family}_bucket{{")) else { continue };
            let labels = parse_labels(labels.trim_end_matches('}'), key);
            let le = labels.iter().find(|(k, _)| k == "le").map(|(_, v)| v.clone()).expect("le");
            let le: f64 = if le == "+Inf" { f64::INFINITY } else { le.parse().expect("le value") };
            let others: Vec<(String, String)> = labels.into_iter().filter(|(k, _)| k != "le").collect();
            by_series.entry(series("", others)).or_default().push((le, *value));
        }
        for (labels, mut buckets) in by_series {
            buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
            assert!(buckets.windows(2).all(|w| w[0].1 <= w[1].1), "{family}{labels}: buckets do not rise");
            let inf = buckets.last().filter(|b| b.0.is_infinite()).map(|b| b.1);
            let count = exposition.samples.get(&format!("{family}_count{labels}")).copied();
            assert!(inf.is_some() && inf == count, "{family}{labels}: +Inf bucket {inf:?} != _count {count:?}");
        }
    }
}
