//! Prometheus metrics: requests by action and result code, and a latency histogram.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;

const BUCKETS_SECS: &[f64] = &[0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0];

/// Counters are keyed by static labels (action names from the action table, codes from the
/// error enum), so recording a request allocates nothing; each request touches one histogram
/// bucket, and the cumulative counts are summed when rendered.
#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    agent: Mutex<BTreeMap<&'static str, u64>>,
    buckets: [AtomicU64; 12],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Metrics {
    pub fn record(&self, action: &'static str, code: &'static str, latency: Duration) {
        *self.requests.lock().entry((action, code)).or_default() += 1;
        let secs = latency.as_secs_f64();
        if let Some(i) = BUCKETS_SECS.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(latency.as_micros() as u64, Ordering::Relaxed);
    }

    /// One secrets-agent request: `hit` (cache), `miss`, `error`, `denied` (token), `refused`.
    pub fn count_agent(&self, result: &'static str) {
        *self.agent.lock().entry(result).or_default() += 1;
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str("# HELP kms_requests_total KMS API requests by action and result code.\n");
        out.push_str("# TYPE kms_requests_total counter\n");
        for ((action, code), n) in self.requests.lock().iter() {
            let _ = writeln!(out, "kms_requests_total{{action=\"{}\",code=\"{}\"}} {n}", escape(action), escape(code));
        }
        out.push_str("# HELP kms_request_duration_seconds Time from request received to response ready.\n");
        out.push_str("# TYPE kms_request_duration_seconds histogram\n");
        for (i, b) in BUCKETS_SECS.iter().enumerate() {
            let _ = writeln!(
                out,
                "kms_request_duration_seconds_bucket{{le=\"{b}\"}} {}",
                self.buckets[i].load(Ordering::Relaxed)
            );
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "kms_request_duration_seconds_bucket{{le=\"+Inf\"}} {count}");
        let _ =
            writeln!(out, "kms_request_duration_seconds_sum {}", self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6);
        let _ = writeln!(out, "kms_request_duration_seconds_count {count}");
        let agent = self.agent.lock();
        if !agent.is_empty() {
            out.push_str("# HELP kms_agent_requests_total Secrets agent requests by outcome.\n");
            out.push_str("# TYPE kms_agent_requests_total counter\n");
            for (result, n) in agent.iter() {
                let _ = writeln!(out, "kms_agent_requests_total{{result=\"{result}\"}} {n}");
            }
        }
        out
    }
}

/// One gauge in the text exposition format: its help line, its type and its value. The other
/// parts of the sidecar that keep state (the replay cache, the audit trail) render theirs with it.
pub fn gauge(out: &mut String, name: &str, help: &str, value: impl std::fmt::Display) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}");
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_histogram() {
        let m = Metrics::default();
        m.record("Encrypt", "OK", Duration::from_micros(300));
        m.record("Encrypt", "Forbidden.KeyNotFound", Duration::from_millis(2));
        let t = m.render();
        assert!(t.contains("kms_requests_total{action=\"Encrypt\",code=\"OK\"} 1"));
        assert!(t.contains("kms_request_duration_seconds_bucket{le=\"0.0005\"} 1"));
        assert!(t.contains("kms_request_duration_seconds_count 2"));
    }
}
