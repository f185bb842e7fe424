/// The tier: its schema, and the probes and settings it adds to core's.
fn tier() -> exporter_core::Tier {
    exporter_core::Tier::new(include_str!("../schema.toml"))
}

fn main() -> std::process::ExitCode {
    exporter_core::run(tier())
}

#[cfg(test)]
mod tests {
    #[test]
    fn settings_reference_is_current() {
        testkit::conformance::settings_reference_is_current(
            env!("CARGO_MANIFEST_DIR"),
            &super::tier(),
        );
    }
}
