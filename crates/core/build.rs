//! Build facts for `--version` and `<self prefix>build_info`, as node_exporter reports them:
//! git revision (with `-dirty` for uncommitted changes), branch, rustc version and target.
//! "unknown" where a fact cannot be had (no git, a source tarball).
use std::process::Command;

fn run(cmd: &str, args: &[&str]) -> Option<String> {
    Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_owned())
}

fn main() {
    let revision = run("git", &["rev-parse", "--short=12", "HEAD"]).filter(|s| !s.is_empty());
    let dirty = run("git", &["status", "--porcelain", "--untracked-files=no"])
        .is_some_and(|s| !s.is_empty());
    let revision = match revision {
        Some(r) if dirty => format!("{r}-dirty"),
        Some(r) => r,
        None => "unknown".into(),
    };
    let branch = run("git", &["rev-parse", "--abbrev-ref", "HEAD"])
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into());
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let rustc_version = run(&rustc, &["--version"]).unwrap_or_else(|| "unknown".into());
    let target = std::env::var("TARGET").unwrap_or_else(|_| "unknown".into());
    println!("cargo:rustc-env=EXPORTER_REVISION={revision}");
    println!("cargo:rustc-env=EXPORTER_BRANCH={branch}");
    println!("cargo:rustc-env=EXPORTER_RUSTC_VERSION={rustc_version}");
    println!("cargo:rustc-env=EXPORTER_TARGET={target}");
    if let Some(dir) = run("git", &["rev-parse", "--git-dir"]).filter(|d| !d.is_empty()) {
        println!("cargo:rerun-if-changed={dir}/HEAD");
        println!("cargo:rerun-if-changed={dir}/refs/heads");
        println!("cargo:rerun-if-changed={dir}/index");
    }
}
