mod data_dir;
mod settings;

fn main() -> std::process::ExitCode {
    exporter_core::run(
        exporter_core::Tier::new(include_str!("../schema.toml"))
            .settings::<settings::OlapSettings>()
            .task("data_dir", data_dir::start),
    )
}
