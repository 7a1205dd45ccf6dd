//! Counters and histograms the engine and server update and `/metrics` renders (Prometheus text).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

/// Histogram bucket upper bounds in seconds.
pub const BUCKETS: [f64; 14] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// A fixed-bucket latency histogram.
#[derive(Debug, Default)]
pub struct Histogram {
    counts: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_us: AtomicU64,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, seconds: f64) {
        for (i, &b) in BUCKETS.iter().enumerate() {
            if seconds <= b {
                self.counts[i].fetch_add(1, Relaxed);
            }
        }
        self.count.fetch_add(1, Relaxed);
        self.sum_us.fetch_add((seconds * 1e6) as u64, Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (i, b) in BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"{b}\"}} {}",
                self.counts[i].load(Relaxed)
            );
        }
        let n = self.count.load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {n}");
        let sum = self.sum_us.load(Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {n}");
    }
}

/// Everything `/metrics` reports.
#[derive(Debug, Default)]
pub struct Metrics {
    /// HTTP responses by status code.
    pub requests_by_status: Mutex<BTreeMap<u16, u64>>,
    /// Prompt tokens of admitted requests.
    pub prompt_tokens: AtomicU64,
    /// Generated tokens.
    pub generated_tokens: AtomicU64,
    /// Requests submitted and not yet admitted (the bounded queue).
    pub queued: AtomicU64,
    /// Sequences in the running batch.
    pub running: AtomicU64,
    /// KV blocks referenced by sequences.
    pub kv_used: AtomicU64,
    /// KV blocks available.
    pub kv_free: AtomicU64,
    /// Prefix-cache block hits.
    pub prefix_hits: AtomicU64,
    /// Preemptions.
    pub preemptions: AtomicU64,
    /// Requests cancelled because their client went away.
    pub cancelled: AtomicU64,
    /// Time to first token.
    pub ttft: Histogram,
    /// Time between consecutive tokens of a sequence.
    pub itl: Histogram,
}

impl Metrics {
    /// Counts one HTTP response.
    pub fn count_status(&self, status: u16) {
        if let Ok(mut m) = self.requests_by_status.lock() {
            *m.entry(status).or_default() += 1;
        }
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(
            o,
            "# HELP rocmforge_requests_total HTTP responses by status code.\n# TYPE rocmforge_requests_total counter"
        );
        if let Ok(m) = self.requests_by_status.lock() {
            for (s, n) in m.iter() {
                let _ = writeln!(o, "rocmforge_requests_total{{status=\"{s}\"}} {n}");
            }
        }
        let counters = [
            (
                "rocmforge_prompt_tokens_total",
                "Prompt tokens processed.",
                &self.prompt_tokens,
            ),
            (
                "rocmforge_generated_tokens_total",
                "Tokens generated.",
                &self.generated_tokens,
            ),
            (
                "rocmforge_prefix_cache_hits_total",
                "KV blocks reused from the prefix cache.",
                &self.prefix_hits,
            ),
            (
                "rocmforge_preemptions_total",
                "Sequences preempted for lack of KV blocks.",
                &self.preemptions,
            ),
            (
                "rocmforge_cancelled_total",
                "Requests cancelled by client disconnect.",
                &self.cancelled,
            ),
        ];
        for (name, help, v) in counters {
            let _ = writeln!(
                o,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                v.load(Relaxed)
            );
        }
        let gauges = [
            (
                "rocmforge_queue_length",
                "Requests waiting for admission.",
                &self.queued,
            ),
            (
                "rocmforge_running_sequences",
                "Sequences in the running batch.",
                &self.running,
            ),
            (
                "rocmforge_kv_blocks_used",
                "KV blocks referenced by sequences.",
                &self.kv_used,
            ),
            (
                "rocmforge_kv_blocks_free",
                "KV blocks available for allocation.",
                &self.kv_free,
            ),
        ];
        for (name, help, v) in gauges {
            let _ = writeln!(
                o,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {}",
                v.load(Relaxed)
            );
        }
        self.ttft.render(
            &mut o,
            "rocmforge_time_to_first_token_seconds",
            "Time from request arrival to its first token.",
        );
        self.itl.render(
            &mut o,
            "rocmforge_inter_token_latency_seconds",
            "Time between consecutive tokens of a sequence.",
        );
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_histogram_buckets_cumulatively() {
        let m = Metrics::default();
        m.ttft.observe(0.02);
        m.ttft.observe(3.0);
        m.count_status(200);
        m.count_status(200);
        m.count_status(400);
        let t = m.render();
        assert!(t.contains("rocmforge_time_to_first_token_seconds_bucket{le=\"0.025\"} 1\n"));
        assert!(t.contains("rocmforge_time_to_first_token_seconds_bucket{le=\"5\"} 2\n"));
        assert!(t.contains("rocmforge_time_to_first_token_seconds_bucket{le=\"+Inf\"} 2\n"));
        assert!(t.contains("rocmforge_time_to_first_token_seconds_count 2\n"));
        assert!(t.contains("rocmforge_requests_total{status=\"200\"} 2\n"));
        assert!(t.contains("rocmforge_requests_total{status=\"400\"} 1\n"));
    }
}
