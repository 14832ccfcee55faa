//! The app's own prom-client metrics over every child, as prom-client's `AggregatorRegistry`
//! merges them: each child answers the master's question with `getMetricsAsJSON()` of its
//! registries (`lib/app_metrics.js`); metrics are grouped by name, and each series (sample
//! name and labels) is combined by the metric's `aggregator` — `sum` (the default: counters,
//! histograms' buckets, sums and counts), `first`, `min`, `max`, `average`, or `omit` (left
//! out). Asked for by process, every child's series are listed instead, under `role`/`id`
//! labels, `omit`ted ones included.
//!
//! Written as OpenMetrics, as the rest of `/metrics`: a counter's family drops its `_total`
//! and its samples carry it; histogram and summary samples keep prom-client's names.

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::Value;

use super::text::{self, canonical, header, valid_label_name, valid_metric_name};

/// One child's answer: who it is and the raw JSON it sent (`null`: no prom-client).
pub(crate) struct Answer<'a> {
    pub(crate) role: &'a str,
    pub(crate) id: u32,
    pub(crate) metrics: &'a [u8],
}

/// A metric as prom-client's `getMetricsAsJSON()` gives it.
#[derive(Debug, Deserialize)]
struct Metric {
    name: String,
    #[serde(default)]
    help: String,
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    values: Vec<Sample>,
    #[serde(default)]
    aggregator: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Sample {
    /// `null` for NaN (JSON has no NaN).
    #[serde(default)]
    value: Option<f64>,
    #[serde(default)]
    labels: serde_json::Map<String, Value>,
    #[serde(rename = "metricName", default)]
    metric_name: Option<String>,
}

/// Labels as name-value pairs.
type Labels = Vec<(String, String)>;

/// A series' identity: its sample name and its labels, sorted.
type SeriesKey = (String, Labels);

/// A series to write: its sample name, labels and value.
struct Series {
    name: String,
    labels: Labels,
    value: f64,
}

/// What came of the answers: the text, and the children whose answer could not be read.
pub(crate) struct Merged {
    pub(crate) text: String,
    pub(crate) unreadable: usize,
}

/// The master's own names: app metrics under it are left out, so no sample can clash.
pub(crate) const RESERVED_PREFIX: &str = "egg_cluster_";

/// Merges the answers (in the order given: the agent, then the app workers) into OpenMetrics
/// families, leaving out names under [`RESERVED_PREFIX`].
pub(crate) fn merge(answers: &[Answer<'_>], by_process: bool) -> Merged {
    let mut unreadable = 0;
    // name -> the metric of each child that has it, names in order of first appearance
    let mut order: Vec<String> = Vec::new();
    let mut by_name: HashMap<String, Vec<(&Answer<'_>, Metric)>> = HashMap::new();
    for answer in answers {
        let metrics = match serde_json::from_slice::<Option<Vec<Metric>>>(answer.metrics) {
            Ok(m) => m.unwrap_or_default(),
            Err(e) => {
                tracing::debug!(role = answer.role, id = answer.id, error = %e, "unreadable metrics answer");
                unreadable += 1;
                continue;
            }
        };
        for m in metrics {
            if !by_name.contains_key(&m.name) {
                order.push(m.name.clone());
            }
            by_name.entry(m.name.clone()).or_default().push((answer, m));
        }
    }
    let mut out = String::new();
    for name in order {
        let Some(metrics) = by_name.remove(&name) else {
            continue;
        };
        let first = &metrics[0].1;
        let kind = match first.kind.as_str() {
            k @ ("counter" | "gauge" | "histogram" | "summary") => k,
            _ => "unknown",
        };
        let family = match kind {
            "counter" => name.strip_suffix("_total").unwrap_or(&name),
            _ => &name,
        };
        if !valid_metric_name(&name) || name.starts_with(RESERVED_PREFIX) {
            tracing::debug!(name, "app metric left out (bad or reserved name)");
            continue;
        }
        let series = if by_process {
            per_process(&metrics)
        } else {
            let aggregator = first.aggregator.as_deref().unwrap_or("sum");
            match aggregate(&metrics, aggregator) {
                Some(series) => series,
                None => continue,
            }
        };
        write_family(&mut out, family, kind, &first.help, series);
    }
    Merged {
        text: out,
        unreadable,
    }
}

/// A label value as prom-client prints it (`String(value)`).
fn label_value(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn labels_of(s: &Sample) -> Labels {
    s.labels
        .iter()
        .map(|(k, v)| (k.clone(), label_value(v)))
        .collect()
}

fn sample_name(metric: &Metric, s: &Sample) -> String {
    s.metric_name.clone().unwrap_or_else(|| metric.name.clone())
}

/// prom-client's aggregators over the series of one name; `None` leaves the metric out.
fn aggregate(metrics: &[(&Answer<'_>, Metric)], aggregator: &str) -> Option<Vec<Series>> {
    let combine: fn(&[f64]) -> f64 = match aggregator {
        "sum" => |v| v.iter().sum(),
        "first" => |v| v[0],
        "min" => |v| v.iter().copied().fold(f64::INFINITY, f64::min),
        "max" => |v| v.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        "average" => |v| v.iter().sum::<f64>() / v.len() as f64,
        "omit" => return None,
        other => {
            tracing::debug!(
                aggregator = other,
                "app metric with an unknown aggregator left out"
            );
            return None;
        }
    };
    // series key (sample name, sorted labels) -> values, keys in order of first appearance
    let mut keys: Vec<SeriesKey> = Vec::new();
    let mut values: HashMap<SeriesKey, Vec<f64>> = HashMap::new();
    for (_, metric) in metrics {
        for s in &metric.values {
            let mut labels = labels_of(s);
            labels.sort();
            let key = (sample_name(metric, s), labels);
            let v = s.value.unwrap_or(f64::NAN);
            match values.get_mut(&key) {
                Some(list) => list.push(v),
                None => {
                    values.insert(key.clone(), vec![v]);
                    keys.push(key);
                }
            }
        }
    }
    Some(
        keys.into_iter()
            .map(|key| {
                let value = combine(&values[&key]);
                Series {
                    name: key.0,
                    labels: key.1,
                    value,
                }
            })
            .collect(),
    )
}

/// Every child's series, with its `role` and `id` (a label of the app's own of either name
/// becomes `exported_role`/`exported_id`, as Prometheus renames a target's clashing labels).
fn per_process(metrics: &[(&Answer<'_>, Metric)]) -> Vec<Series> {
    let mut out = Vec::new();
    for (answer, metric) in metrics {
        let id = answer.id.to_string();
        for s in &metric.values {
            let mut labels: Labels = labels_of(s)
                .into_iter()
                .map(|(k, v)| match k.as_str() {
                    "role" | "id" => (format!("exported_{k}"), v),
                    _ => (k, v),
                })
                .collect();
            labels.push(("role".into(), answer.role.into()));
            labels.push(("id".into(), id.clone()));
            out.push(Series {
                name: sample_name(metric, s),
                labels,
                value: s.value.unwrap_or(f64::NAN),
            });
        }
    }
    out
}

/// One family: the series of each label set together (as OpenMetrics wants a histogram's and
/// a summary's), buckets and quantiles in ascending order, `le`/`quantile` canonical.
fn write_family(out: &mut String, family: &str, kind: &str, help: &str, mut series: Vec<Series>) {
    series.retain(|s| {
        valid_metric_name(&s.name) && s.labels.iter().all(|(k, _)| valid_label_name(k))
    });
    if series.is_empty() {
        return;
    }
    if kind == "histogram" || kind == "summary" {
        series = grouped(
            series,
            family,
            if kind == "histogram" {
                "le"
            } else {
                "quantile"
            },
        );
    }
    header(out, family, kind, help);
    for s in series {
        let name = if kind == "counter" && !s.name.ends_with("_total") {
            format!("{}_total", s.name)
        } else {
            s.name
        };
        text::sample(
            out,
            &name,
            s.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            s.value,
        );
    }
}

/// A histogram's or a summary's series: those of one label set (`bound` aside) together, in
/// order of first appearance; in each, the buckets or quantiles ascending, then `_count` and
/// `_sum`; `bound` written canonically.
fn grouped(series: Vec<Series>, family: &str, bound: &str) -> Vec<Series> {
    let mut groups: Vec<Labels> = Vec::new();
    let mut keyed: Vec<((usize, u8, f64), Series)> = series
        .into_iter()
        .map(|mut s| {
            let mut at = f64::INFINITY;
            for (k, v) in &mut s.labels {
                if k == bound {
                    if let Some(b) = parse_bound(v) {
                        at = b;
                        *v = canonical(b);
                    }
                }
            }
            let group: Labels = s
                .labels
                .iter()
                .filter(|(k, _)| k != bound)
                .cloned()
                .collect();
            let g = groups.iter().position(|x| *x == group).unwrap_or_else(|| {
                groups.push(group);
                groups.len() - 1
            });
            let rank = match s.name.strip_prefix(family).unwrap_or("") {
                "_bucket" | "" => 0,
                "_count" => 1,
                "_sum" => 2,
                _ => 3,
            };
            ((g, rank, at), s)
        })
        .collect();
    keyed.sort_by(|(a, _), (b, _)| a.0.cmp(&b.0).then(a.1.cmp(&b.1)).then(a.2.total_cmp(&b.2)));
    keyed.into_iter().map(|(_, s)| s).collect()
}

fn parse_bound(v: &str) -> Option<f64> {
    match v {
        "+Inf" | "Inf" | "Infinity" => Some(f64::INFINITY),
        "-Inf" | "-Infinity" => Some(f64::NEG_INFINITY),
        v => v.parse().ok(),
    }
}

#[cfg(test)]
#[path = "app_metrics_tests.rs"]
mod tests;
