//! Prometheus metrics: the process-wide recorder and the data plane's own series.
//!
//! Lower layers emit through the `metrics` facade (a no-op until a recorder is
//! installed, so tests that drive actors directly need none); this module installs
//! the Prometheus recorder once per process and renders `/metrics`.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub const REQUESTS: &str = "edged_requests_total";
pub const REQUEST_SECONDS: &str = "edged_request_duration_seconds";
/// Responses the data plane answered from static assets, by status.
pub const ASSET_RESPONSES: &str = "edged_asset_responses_total";
pub const STREAM_ERRORS: &str = "edged_response_stream_errors_total";

const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

const UPKEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

/// The process's Prometheus handle, installing the recorder on first use.
pub fn prometheus() -> Option<&'static PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
                .ok()?;
            let handle = builder.install_recorder().ok()?;
            describe();
            // Histogram samples collect in per-series buffers until upkeep
            // folds them into buckets; a node nobody scrapes must not grow, so
            // upkeep runs on a clock, not only when /metrics renders.
            let upkeep = handle.clone();
            let _ = std::thread::Builder::new()
                .name("edged-metrics-upkeep".into())
                .spawn(move || loop {
                    std::thread::sleep(UPKEEP_EVERY);
                    upkeep.run_upkeep();
                });
            Some(handle)
        })
        .as_ref()
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(REQUESTS, "Data-plane requests by worker and status");
    describe_counter!(
        ASSET_RESPONSES,
        "Data-plane requests answered from static assets, by worker and status"
    );
    describe_histogram!(REQUEST_SECONDS, "Data-plane request latency by worker");
    describe_counter!(
        "edged_cold_starts_total",
        "Isolates bound to a worker version"
    );
    describe_histogram!(
        "edged_cold_start_seconds",
        "Time from spawn request to a bound isolate"
    );
    describe_counter!(
        "edged_warm_pool_hits_total",
        "Cold starts served by a pre-created isolate"
    );
    describe_counter!(
        "edged_warm_pool_misses_total",
        "Cold starts that had to create an isolate"
    );
    describe_gauge!(
        "edged_live_isolates",
        "Isolates bound to a worker and running"
    );
    describe_counter!(
        "edged_limit_kills_total",
        "Isolates terminated for a CPU or memory limit"
    );
}

pub fn render() -> String {
    prometheus().map(|h| h.render()).unwrap_or_default()
}
