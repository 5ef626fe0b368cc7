//! Reading a server's `/metrics` the way Prometheus does: fetched with the
//! one HTTP client, parsed by `prometheus-parse`.

use anyhow::{Context, ensure};
use prometheus_parse::{Scrape, Value};
use std::collections::BTreeSet;
use std::net::SocketAddr;

/// One scrape of `/metrics`.
pub struct Metrics {
    /// The exposition as served, for failure messages and `promtool`.
    pub text: String,
    /// The same, parsed.
    scrape: Scrape,
}

impl Metrics {
    /// `GET http://addr/metrics`, which must answer 200 with text that
    /// parses.
    pub async fn scrape(addr: SocketAddr) -> anyhow::Result<Self> {
        let response = crate::http::get(&format!("http://{addr}/metrics")).await?;
        ensure!(
            response.status == 200,
            "GET /metrics answered {}: {}",
            response.status,
            response.text()
        );
        Self::parse(response.text())
    }

    /// Parses Prometheus text.
    pub fn parse(text: String) -> anyhow::Result<Self> {
        let scrape = Scrape::parse(text.lines().map(|line| Ok(line.to_owned())))
            .context("/metrics is not Prometheus text")?;
        Ok(Self { text, scrape })
    }

    /// The value of the counter, gauge or untyped sample `name` whose labels
    /// are exactly `labels`; `None` when there is no such sample.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.scrape.samples.iter().find_map(|sample| {
            let same_labels = sample.labels.len() == labels.len()
                && labels.iter().all(|(key, value)| sample.labels.get(key) == Some(*value));
            if sample.metric != name || !same_labels {
                return None;
            }
            match sample.value {
                Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => Some(v),
                Value::Histogram(_) | Value::Summary(_) => None,
            }
        })
    }

    /// A counter that is only exported once it has counted something: its
    /// value, or 0 when absent.
    pub fn count(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.value(name, labels).unwrap_or(0.0)
    }

    /// The cumulative bucket counts of the unlabelled histogram `name`, as
    /// (upper bound, count), in the order served.
    pub fn histogram(&self, name: &str) -> Option<Vec<(f64, f64)>> {
        self.scrape.samples.iter().find_map(|sample| match &sample.value {
            Value::Histogram(buckets) if sample.metric == name && sample.labels.is_empty() => {
                Some(buckets.iter().map(|bucket| (bucket.less_than, bucket.count)).collect())
            }
            _ => None,
        })
    }

    /// How many samples (label sets) the family `name` has.
    pub fn samples_of(&self, name: &str) -> usize {
        self.scrape.samples.iter().filter(|sample| sample.metric == name).count()
    }

    /// The names of the metric families that have samples (a histogram by
    /// its base name, without `_bucket`, `_sum` or `_count`).
    pub fn families(&self) -> BTreeSet<String> {
        let histograms: BTreeSet<&str> = self
            .scrape
            .samples
            .iter()
            .filter(|sample| matches!(sample.value, Value::Histogram(_)))
            .map(|sample| sample.metric.as_str())
            .collect();
        self.scrape
            .samples
            .iter()
            .map(|sample| {
                let name = sample.metric.as_str();
                ["_sum", "_count"]
                    .iter()
                    .filter_map(|suffix| name.strip_suffix(suffix))
                    .find(|base| histograms.contains(base))
                    .unwrap_or(name)
                    .to_owned()
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP up_total Things.
# TYPE up_total counter
up_total{reason="flood"} 2
up_total{reason="client"} 1
# TYPE open gauge
open 3
# TYPE lag_seconds histogram
lag_seconds_bucket{le="0.1"} 4
lag_seconds_bucket{le="+Inf"} 5
lag_seconds_sum 0.7
lag_seconds_count 5
"#;

    #[test]
    fn reads_samples_by_name_and_exact_labels() {
        let metrics = Metrics::parse(TEXT.to_owned()).expect("parses");
        assert_eq!(metrics.value("up_total", &[("reason", "flood")]), Some(2.0));
        assert_eq!(metrics.value("up_total", &[]), None);
        assert_eq!(metrics.value("open", &[]), Some(3.0));
        assert_eq!(metrics.count("missing_total", &[]), 0.0);
        assert_eq!(metrics.value("lag_seconds_count", &[]), Some(5.0));
        assert_eq!(metrics.histogram("lag_seconds"), Some(vec![(0.1, 4.0), (f64::INFINITY, 5.0)]));
        assert_eq!(metrics.samples_of("up_total"), 2);
    }

    #[test]
    fn families_name_histograms_by_their_base() {
        let metrics = Metrics::parse(TEXT.to_owned()).expect("parses");
        let families: Vec<String> = metrics.families().into_iter().collect();
        assert_eq!(families, ["lag_seconds", "open", "up_total"]);
    }
}
