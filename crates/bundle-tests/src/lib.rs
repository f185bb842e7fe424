//! Support for the bundle tests (`tests/bundle/`), which check the monitoring bundle
//! (alerts/, dashboards/, deploy/, docs/runbooks/) with the real Prometheus tools and against
//! the exporter schemas.

pub mod promql;
