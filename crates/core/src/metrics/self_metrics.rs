//! Handles on the exporter's own metrics (`crates/core/self_schema.toml`), resolved once when
//! the registry is built. A name the code needs but the schema lacks, or declares with another
//! type, stops start-up instead of silently not counting.

use super::handles::{wrong, Counter, Gauge, Histogram, Metric};
use crate::schema::SchemaError;

macro_rules! self_metrics {
    ($($field:ident: $kind:ident = $name:literal,)+) => {
        /// The exporter's own metrics; names are `<self prefix><name>`.
        #[derive(Clone)]
        pub struct SelfMetrics {
            $(pub $field: $kind,)+
        }

        impl SelfMetrics {
            /// Names without the self prefix, as `self_schema.toml` declares them.
            pub const NAMES: &'static [&'static str] = &[$($name,)+];

            pub(crate) fn resolve<'a>(
                prefix: &str,
                lookup: impl Fn(&str) -> Option<&'a Metric>,
            ) -> Result<SelfMetrics, SchemaError> {
                Ok(SelfMetrics {
                    $($field: {
                        let name = format!("{prefix}{}", $name);
                        match lookup(&name) {
                            Some(Metric::$kind(m)) => m.clone(),
                            other => return Err(wrong(&name, stringify!($kind), other)),
                        }
                    },)+
                })
            }
        }
    };
}

self_metrics! {
    build_info: Gauge = "build_info",
    scrape_duration: Histogram = "scrape_duration_seconds",
    engine_up: Gauge = "engine_up",
    source_up: Gauge = "source_up",
    samples_accepted: Counter = "ingest_samples_accepted_total",
    rejected: Counter = "ingest_rejected_total",
    last_sample: Gauge = "ingest_last_sample_timestamp_seconds",
    tags_dropped: Counter = "ingest_tags_dropped_total",
    series_expired: Counter = "ingest_series_expired_total",
    statsd_datagrams: Counter = "statsd_datagrams_total",
    statsd_lines: Counter = "statsd_lines_total",
    statsd_received_bytes: Counter = "statsd_received_bytes_total",
    statsd_udp_dropped: Counter = "statsd_udp_dropped_total",
    log_files_followed: Gauge = "log_files_followed",
    log_files_open: Gauge = "log_files_open",
    log_files_waiting: Gauge = "log_files_waiting",
    log_follower_errors: Counter = "log_follower_errors_total",
    log_lines_read: Counter = "log_lines_read_total",
    log_read_bytes: Counter = "log_read_bytes_total",
    log_rotations: Counter = "log_rotations_total",
    log_truncations: Counter = "log_truncations_total",
    log_behind_bytes: Gauge = "log_behind_bytes",
    reload_successful: Gauge = "config_last_reload_successful",
    reload_success_time: Gauge = "config_last_reload_success_timestamp_seconds",
}
