//! The deploy files: Prometheus configs (promtool, every tier scraped on its port), the
//! Alertmanager config (amtool), every file parsing.

use super::*;

/// Lays out a Prometheus config the way it is installed (/etc/prometheus/{prometheus.yml, rules/,
/// file_sd/}) so that promtool also loads the rule files and checks the file_sd files.
pub(crate) fn check_prometheus_config(promtool: &Path, config: &Path) {
    let root = root();
    let dir = tmpdir(&config.file_stem().expect("stem").to_string_lossy());
    fs::copy(config, dir.join("prometheus.yml")).expect("copy config");
    copy_dir(&root.join("alerts"), &dir.join("rules"));
    copy_dir(
        &root.join("deploy/prometheus/file_sd"),
        &dir.join("file_sd"),
    );
    let mut cmd = Command::new(promtool);
    cmd.current_dir(&dir)
        .arg("check")
        .arg("config")
        .arg("prometheus.yml");
    let out = run(cmd);
    assert!(out.contains("SUCCESS"), "{}:\n{out}", config.display());
    let _ = fs::remove_dir_all(dir);
}

pub(crate) fn prometheus_configs() -> Vec<PathBuf> {
    let root = root();
    let mut all = files(&root.join("deploy/prometheus"), ".yml");
    all.extend(
        files(&root.join("deploy/scale-out"), ".yml")
            .into_iter()
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("prometheus"))
            }),
    );
    all
}

#[test]
fn promtool_check_config() {
    let Some(promtool) = tool("promtool") else {
        return;
    };
    let configs = prometheus_configs();
    assert!(
        configs.len() >= 3,
        "expected the static, ec2 and shard configs: {configs:?}"
    );
    for c in configs {
        check_prometheus_config(&promtool, &c);
    }
}

#[test]
fn prometheus_configs_scrape_every_tier_on_its_port() {
    let root = root();
    let mut ports = BTreeMap::new();
    for schema in tiers() {
        ports.insert(schema.tier.job.clone(), schema.tier.port().to_string());
    }
    for c in prometheus_configs() {
        let doc = yaml(&c);
        let jobs = doc["scrape_configs"].as_vec().expect("scrape_configs");
        for (job, port) in &ports {
            let at = format!("{}: job {job}", c.display());
            let j = jobs
                .iter()
                .find(|j| j["job_name"].as_str() == Some(job))
                .unwrap_or_else(|| panic!("{at} missing"));
            let mut discovered = 0;
            for sc in j["static_configs"].as_vec().into_iter().flatten() {
                for t in sc["targets"].as_vec().expect("targets") {
                    let t = t.as_str().expect("target");
                    assert!(t.ends_with(&format!(":{port}")), "{at}: target {t}");
                    discovered += 1;
                }
            }
            for ec2 in j["ec2_sd_configs"].as_vec().into_iter().flatten() {
                assert_eq!(
                    ec2["port"].as_i64().map(|p| p.to_string()).as_deref(),
                    Some(port.as_str()),
                    "{at}: ec2 port"
                );
                discovered += 1;
            }
            // file_sd files are checked below
            discovered += j["file_sd_configs"].as_vec().map_or(0, Vec::len);
            assert!(discovered > 0, "{at}: no targets");
        }
    }
    // file_sd targets use the schema ports too.
    for f in files(&root.join("deploy/prometheus/file_sd"), ".json") {
        let v = json(&f);
        for group in v.as_array().expect("file_sd list") {
            let job = group["labels"]["job"].as_str().expect("job label");
            let Some(port) = ports.get(job) else {
                continue; // node, kafka
            };
            for t in group["targets"].as_array().expect("targets") {
                assert!(
                    t.as_str().expect("target").ends_with(&format!(":{port}")),
                    "{}: {t}",
                    f.display()
                );
            }
        }
    }
    // The packaged configuration listens where Prometheus scrapes, and the unit reads it.
    for schema in tiers() {
        let (bin, port) = (&schema.tier.binary, schema.tier.port().to_string());
        let config = read(&root.join(format!("deploy/debian/{bin}.toml")));
        assert!(
            config.contains(&format!("listen_address = \"0.0.0.0:{port}\"")),
            "deploy/debian/{bin}.toml port"
        );
        let unit = read(&root.join(format!("deploy/systemd/{bin}.service")));
        assert!(
            unit.contains(&format!("--config.file=/etc/{bin}/config.toml"))
                && unit.contains("ExecReload=/bin/kill -HUP $MAINPID"),
            "{bin}.service"
        );
    }
}

#[test]
fn amtool_check_config() {
    let Some(amtool) = tool("amtool") else {
        return;
    };
    let mut cmd = Command::new(amtool);
    cmd.arg("check-config")
        .arg(root().join("deploy/alertmanager/alertmanager.yml"));
    let out = run(cmd);
    assert!(out.contains("SUCCESS"), "{out}");
}

#[test]
fn deploy_files_parse() {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in fs::read_dir(dir).expect("read dir") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                walk(&p, out);
            } else {
                out.push(p);
            }
        }
    }
    let mut all = Vec::new();
    walk(&root().join("deploy"), &mut all);
    let mut n = 0;
    for p in all {
        let name = p.to_string_lossy().into_owned();
        if name.ends_with(".yml") || name.ends_with(".yaml") {
            YamlLoader::load_from_str(&read(&p)).unwrap_or_else(|e| panic!("{name}: {e}"));
            n += 1;
        } else if name.ends_with(".json") {
            json(&p);
            n += 1;
        }
    }
    assert!(n >= 12, "only {n} YAML/JSON files in deploy/");
}
