//! Tests-only crate: see `tests/bundle.rs`. It checks the monitoring bundle (alerts/, dashboards/,
//! deploy/, docs/runbooks/) with the real Prometheus tools and against the exporter schemas.
