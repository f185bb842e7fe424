//! The data-directory probe on a real temporary tree, compared with du and df.

#![allow(clippy::unwrap_used)] // tests may panic on broken fixtures

use std::process::Command;
use std::time::Duration;

use testkit::{eventually, require_tool, sample_value, Exporter, TempDir};

const BIN: &str = env!("CARGO_BIN_EXE_olap-exporter");

fn command_number(cmd: &mut Command) -> f64 {
    let out = cmd.output().expect("run");
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .find_map(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("no number in {text:?}"))
}

#[test]
fn data_dir_bytes_and_filesystem_match_du_and_df() {
    if !require_tool("du") || !require_tool("df") {
        return;
    }
    let tmp = TempDir::new("olap-data");
    let data = tmp.join("data");
    std::fs::create_dir_all(data.join("part-1/cols")).unwrap();
    std::fs::create_dir_all(data.join("part-2")).unwrap();
    std::fs::write(data.join("part-1/cols/a.bin"), vec![7u8; 300_000]).unwrap();
    std::fs::write(data.join("part-1/meta.json"), b"{}").unwrap();
    std::fs::write(data.join("part-2/b.bin"), vec![1u8; 1_500_000]).unwrap();
    std::fs::hard_link(data.join("part-2/b.bin"), data.join("part-2/b-link.bin")).unwrap();

    let exporter = Exporter::start(BIN, &[&format!("--olap.data-dir={}", data.display())]);
    let used = eventually(Duration::from_secs(10), || {
        sample_value(&exporter.scrape_text(), "olap_data_dir_used_bytes").filter(|v| v.is_finite())
    })
    .expect("data dir measured");
    let du = command_number(Command::new("du").args(["-s", "-B1"]).arg(&data));
    assert_eq!(
        used, du,
        "allocated bytes as du counts them (hard link once)"
    );
    assert!(used >= 1_800_000.0);

    let text = exporter.scrape_text();
    let size = sample_value(&text, "olap_data_filesystem_size_bytes").unwrap();
    let avail = sample_value(&text, "olap_data_filesystem_avail_bytes").unwrap();
    let free = sample_value(&text, "olap_data_filesystem_free_bytes").unwrap();
    let df_size = command_number(Command::new("df").args(["-B1", "--output=size"]).arg(&data));
    let df_avail = command_number(
        Command::new("df")
            .args(["-B1", "--output=avail"])
            .arg(&data),
    );
    assert_eq!(size, df_size);
    // Other processes write to the same disk meanwhile: allow 2 % of the filesystem.
    assert!(
        (avail - df_avail).abs() <= size * 0.02,
        "avail {avail} vs df {df_avail}"
    );
    assert!(free >= avail && size >= free);
    assert!(sample_value(&text, "olap_exporter_data_dir_walk_seconds").is_some_and(|v| v >= 0.0));
    let health: serde_json::Value =
        serde_json::from_slice(&exporter.get("/health", &[]).body).unwrap();
    assert_eq!(health["sources"]["data_dir"]["state"], "ok", "{health}");
}

#[test]
fn missing_data_dir_is_reported_not_invented() {
    let exporter = Exporter::start(BIN, &["--olap.data-dir=/nonexistent/olap-data"]);
    let health = eventually(Duration::from_secs(10), || {
        let h: serde_json::Value =
            serde_json::from_slice(&exporter.get("/health", &[]).body).ok()?;
        (h["sources"]["data_dir"]["state"] == "degraded").then_some(h)
    })
    .expect("data_dir source degraded");
    assert!(health["sources"]["data_dir"]["last_error"]
        .as_str()
        .unwrap()
        .contains("/nonexistent/olap-data"));
    let text = exporter.scrape_text();
    assert!(sample_value(&text, "olap_data_dir_used_bytes").is_some_and(f64::is_nan));
    assert!(sample_value(&text, "olap_data_filesystem_size_bytes").is_some_and(f64::is_nan));
}

/// The data directory's filesystem stops answering (a hung NFS or FUSE mount; here a FUSE
/// connection nobody answers, mounted over it in the exporter's own mount namespace): its
/// figures turn unknown and the source down, instead of the last ones standing as if healthy;
/// scrapes stay under 1 s and SIGTERM exits within 5 s.
#[test]
fn a_hung_data_dir_filesystem_shows_unknown_not_stale() {
    use testkit::namespace::{mount_namespaces_work, mount_silent_fuse, start_in_mount_namespace};
    if !mount_namespaces_work() {
        return;
    }
    let tmp = TempDir::new("olap-hung");
    let data = tmp.join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("part.bin"), vec![7u8; 100_000]).unwrap();
    let arg = format!("--olap.data-dir={}", data.display());
    let exp = start_in_mount_namespace(BIN, &[&arg], None);
    let up = "olap_exporter_source_up{source=\"data_dir\"}";
    let measured = eventually(Duration::from_secs(10), || {
        let text = exp.scrape_text();
        (sample_value(&text, up) == Some(1.0))
            .then(|| sample_value(&text, "olap_data_filesystem_size_bytes"))
            .flatten()
    });
    assert!(
        measured.is_some_and(f64::is_finite),
        "{}",
        exp.scrape_text()
    );

    let _fuse = mount_silent_fuse(exp.pid(), &data);
    // One pause between rounds (15 s) and the statvfs budget (5 s).
    let down = eventually(Duration::from_secs(40), || {
        let text = exp.scrape_text();
        (sample_value(&text, up) == Some(0.0)).then_some(text)
    });
    let text = down.unwrap_or_else(|| panic!("source not down: {}", exp.scrape_text()));
    for name in [
        "olap_data_filesystem_size_bytes",
        "olap_data_filesystem_free_bytes",
        "olap_data_filesystem_avail_bytes",
    ] {
        let v = sample_value(&text, name);
        assert!(
            v.is_none_or(f64::is_nan),
            "{name} {v:?}: unknown, not the last figure"
        );
    }
    let health = exp.get("/health", &[]).text();
    assert!(health.contains("has not finished"), "{health}");
    let (slowest, _) = exp.scrape_series(10, Duration::from_millis(200));
    eprintln!("hung data dir: slowest of 10 scrapes {slowest:?}");
    assert!(
        slowest < Duration::from_secs(1),
        "slowest scrape {slowest:?}"
    );
    exp.terminate_within(Duration::from_secs(5));
}
