mod data_dir;

fn main() -> std::process::ExitCode {
    exporter_core::run(
        exporter_core::Tier::new(include_str!("../schema.toml")).task("data_dir", data_dir::start),
    )
}
