use super::*;
use std::collections::HashMap;

fn tier() -> TierInfo {
    TierInfo {
        name: "tx".into(),
        binary: "tx-exporter".into(),
        job: "tx-engines".into(),
        metric_prefix: "tx_engine_".into(),
        self_prefix: "tx_exporter_".into(),
        engine: "engine".into(),
        web_listen_address: "0.0.0.0:9090".into(),
        statsd_udp: "127.0.0.1:8125".into(),
    }
}

fn run(args: &[&str], env: &[(&str, &str)], file: Option<&Path>) -> Result<Config, ConfigError> {
    run_sections(&[], args, env, file)
}

/// Layers flags, env and file as `load` does, with `sections` registered.
fn run_sections(
    sections: &[SectionSpec],
    args: &[&str],
    env: &[(&str, &str)],
    file: Option<&Path>,
) -> Result<Config, ConfigError> {
    let t = tier();
    let mut argv = vec!["tx-exporter"];
    argv.extend_from_slice(args);
    let matches = command(&t, sections)
        .try_get_matches_from(argv)
        .map_err(|e| ConfigError::Invalid(e.to_string()))?;
    let env = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect::<HashMap<_, _>>();
    layer(&t, sections, file, env, &matches)
}

#[test]
fn defaults_need_nothing() {
    let c = run(&[], &[], None).expect("defaults are valid");
    assert_eq!(c, Config::defaults(&tier()));
    assert_eq!(c.web.listen_address, "0.0.0.0:9090");
    assert_eq!(c.ingest.statsd_udp, "127.0.0.1:8125");
}

#[test]
fn flags_override_env_override_file() {
    let dir = std::env::temp_dir().join(format!("cfg-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("c.yaml");
    std::fs::write(
        &file,
        "web:\n  listen_address: 127.0.0.1:1000\nlog:\n  level: debug\n",
    )
    .expect("write");
    let c = run(&[], &[], Some(&file)).expect("file");
    assert_eq!(c.web.listen_address, "127.0.0.1:1000");
    assert_eq!(c.log.level, "debug");
    let env = [("TX_EXPORTER__WEB__LISTEN_ADDRESS", "127.0.0.1:2000")];
    let c = run(&[], &env, Some(&file)).expect("env");
    assert_eq!(c.web.listen_address, "127.0.0.1:2000");
    let c = run(&["--web.listen-address=127.0.0.1:3000"], &env, Some(&file)).expect("flag");
    assert_eq!(c.web.listen_address, "127.0.0.1:3000");
    let env = [("TX_EXPORTER__INGEST__LOG_PATH", "/a/*.log,/b/*.log")];
    let c = run(&[], &env, None).expect("env list");
    assert_eq!(c.ingest.log_path, vec!["/a/*.log", "/b/*.log"]);
    let c = run(&["--ingest.log-path=/x", "--ingest.log-path=/y"], &[], None).expect("list");
    assert_eq!(c.ingest.log_path, vec!["/x", "/y"]);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn bad_values_are_clear_errors() {
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);
    let cases: &[Case] = &[
        (&["--web.listen-address=nope"], &[], "web.listen_address"),
        (&["--ingest.statsd-udp=1.2.3.4"], &[], "ingest.statsd_udp"),
        (&["--log.format=xml"], &[], "log.format"),
        (&[], &[("TX_EXPORTER__WEB__NOPE", "1")], "unknown field"),
        (&["--olap.data-dir=/x"], &[], "unexpected argument"),
        (&["--web.telemetry-path=/"], &[], "web.telemetry_path"),
        (
            &["--web.telemetry-path=/:metrics"],
            &[],
            "web.telemetry_path",
        ),
        (
            &["--web.telemetry-path=/-/ready"],
            &[],
            "web.telemetry_path",
        ),
        (&["--ingest.log-path=/var/log/["], &[], "ingest.log_path"),
        (&["--ingest.series-limit=many"], &[], "series_limit"),
    ];
    for (args, env, expected) in cases {
        let err = run(args, env, None).expect_err(expected).to_string();
        assert!(err.contains(expected), "{args:?}: {err}");
    }
}

#[test]
fn profiling_switch_is_off_by_default_and_works_bare() {
    assert!(!run(&[], &[], None).expect("defaults").web.enable_profiling);
    let c = run(&["--web.enable-profiling"], &[], None).expect("bare flag");
    assert!(c.web.enable_profiling);
    let c = run(&["--web.enable-profiling=false"], &[], None).expect("explicit");
    assert!(!c.web.enable_profiling);
    let env = [("TX_EXPORTER__WEB__ENABLE_PROFILING", "true")];
    assert!(run(&[], &env, None).expect("env").web.enable_profiling);
    assert!(run(&["--web.enable-profiling=maybe"], &[], None).is_err());
}

/// A tier section as a tier crate would declare it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct Probe {
    target: String,
    #[serde(default)]
    extra: Vec<String>,
}

impl Default for Probe {
    fn default() -> Self {
        Probe {
            target: "127.0.0.1:1".into(),
            extra: Vec::new(),
        }
    }
}

impl Settings for Probe {
    const SECTION: &'static str = "probe";
    const FLAGS: &'static [Flag] = &[
        Flag::one("probe.target", "probe.target", "the target"),
        Flag::list("probe.extra", "probe.extra", "extra targets"),
    ];
    fn validate(&self) -> Result<(), String> {
        if self.target.contains(':') {
            Ok(())
        } else {
            Err(format!("target: {:?} must be HOST:PORT", self.target))
        }
    }
}

fn run_with_section(
    args: &[&str],
    env: &[(&str, &str)],
    file: Option<&Path>,
) -> Result<Config, ConfigError> {
    run_sections(&[SectionSpec::of::<Probe>()], args, env, file)
}

#[test]
fn tier_sections_layer_like_core_ones() {
    let c = run_with_section(&[], &[], None).expect("defaults");
    assert_eq!(c.section::<Probe>(), Some(&Probe::default()));
    let c = run_with_section(&["--probe.extra=a", "--probe.extra=b"], &[], None).expect("flags");
    assert_eq!(c.section::<Probe>().expect("section").extra, ["a", "b"]);
    let env = [
        ("TX_EXPORTER__PROBE__EXTRA", "x,y"),
        ("TX_EXPORTER__PROBE__TARGET", "h:2"),
    ];
    let c = run_with_section(&[], &env, None).expect("env");
    let p = c.section::<Probe>().expect("section");
    assert_eq!((p.target.as_str(), p.extra.len()), ("h:2", 2));
    let err = run_with_section(&["--probe.target=nope"], &[], None).expect_err("invalid");
    assert!(err.to_string().contains("probe.target"), "{err}");
    let err =
        run_with_section(&[], &[("TX_EXPORTER__PROBE__NOPE", "1")], None).expect_err("unknown key");
    assert!(err.to_string().contains("unknown field"), "{err}");
    let text = c.to_toml().expect("toml");
    assert!(
        text.contains("[probe]") && text.contains("target = \"h:2\""),
        "{text}"
    );
}

#[test]
fn unknown_sections_are_refused_by_name() {
    let err = run(&[], &[("TX_EXPORTER__PROBE__TARGET", "h:1")], None).expect_err("no section");
    assert!(err.to_string().contains("unknown section [probe]"), "{err}");
}

#[test]
fn empty_statsd_address_disables_listener() {
    let c = run(&["--ingest.statsd-udp="], &[], None).expect("valid");
    assert_eq!(c.statsd_udp_addr().expect("valid"), None);
    assert_eq!(parse_listen_addr(":9090").expect("ok").port(), 9090);
}
