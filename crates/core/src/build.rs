//! What the binary was built from (set by build.rs), for `--version` and `*_build_info`. A leaf:
//! it imports nothing of the crate, so config and runtime both read it from below.

/// Revision the binary was built from (set by build.rs from git, `-dirty` with uncommitted
/// changes, else "unknown").
pub const REVISION: &str = env!("EXPORTER_REVISION");
/// Git branch of the build, else "unknown".
pub const BRANCH: &str = env!("EXPORTER_BRANCH");
/// `rustc --version` of the compiler that built it.
pub const RUSTC_VERSION: &str = env!("EXPORTER_RUSTC_VERSION");
/// The target triple it was built for.
pub const TARGET: &str = env!("EXPORTER_TARGET");

/// `--version` text, laid out as node_exporter's.
pub fn version_text(binary: &str) -> String {
    format!(
        "{binary}, version {} (branch: {BRANCH}, revision: {REVISION})\n  rustc version:    {RUSTC_VERSION}\n  platform:         {TARGET}\n",
        env!("CARGO_PKG_VERSION")
    )
}
