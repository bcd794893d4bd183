//! Prometheus metrics: requests by action and result code, and a latency histogram.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;

const BUCKETS_SECS: &[f64] = &[0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0];

#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, String), u64>>,
    buckets: [AtomicU64; 12],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Metrics {
    pub fn record(&self, action: &str, code: &str, latency: Duration) {
        *self.requests.lock().entry((action.to_string(), code.to_string())).or_default() += 1;
        let secs = latency.as_secs_f64();
        for (i, b) in BUCKETS_SECS.iter().enumerate() {
            if secs <= *b {
                self.buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(latency.as_micros() as u64, Ordering::Relaxed);
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
        out
    }
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
