mod data_dir;
mod settings;

fn main() -> std::process::ExitCode {
    exporter_core::run(
        exporter_core::Tier::new(include_str!("../schema.toml"))
            .probe::<data_dir::DataDirFilesystem>()
            .probe::<data_dir::DataDirWalk>(),
    )
}
