//! The real binary serves its whole schema in both formats, parseable and lint-clean, even
//! with no chronyd to talk to.

#[test]
fn serves_every_schema_metric_from_the_first_scrape() {
    testkit::conformance::check_tier(
        env!("CARGO_BIN_EXE_clock-exporter"),
        include_str!("../schema.toml"),
    );
}
