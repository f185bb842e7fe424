fn main() -> std::process::ExitCode {
    exporter_core::run(clock_exporter::register(exporter_core::Tier::new(
        include_str!("../schema.toml"),
    )))
}
