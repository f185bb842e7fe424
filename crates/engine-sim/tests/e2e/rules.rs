//! The shipped rules made fast for a test: every `for:` and range window divided by
//! [`TIME_SCALE`], checked by promtool; the Alertmanager config without notifications.

use super::*;

/// Rule durations are divided by this: one minute of the real rules is one second here.
pub(crate) const TIME_SCALE: u64 = 60;

/// Seconds of a PromQL duration such as `5m`, `1h30m`, `90s`.
pub(crate) fn duration_secs(d: &str) -> Option<u64> {
    let mut total = 0;
    let mut num = String::new();
    let mut chars = d.chars().peekable();
    let mut any = false;
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let mut unit = c.to_string();
        if c == 'm' && chars.peek() == Some(&'s') {
            unit.push(chars.next()?);
        }
        let n: u64 = num.parse().ok()?;
        num.clear();
        total += match unit.as_str() {
            "ms" => n / 1000,
            "s" => n,
            "m" => n * 60,
            "h" => n * 3600,
            "d" => n * 86_400,
            "w" => n * 604_800,
            "y" => n * 31_536_000,
            _ => return None,
        };
        any = true;
    }
    (any && num.is_empty()).then_some(total)
}

pub(crate) fn scaled(d: &str) -> String {
    let secs = duration_secs(d).unwrap_or_else(|| panic!("not a duration: {d:?}"));
    format!("{}s", (secs / TIME_SCALE).max(1))
}

/// A scaled range window holds at least this many seconds (scrapes): with a 2 s window one
/// late scrape on a loaded machine would empty `last_over_time` and reset a long `for:`.
pub(crate) const MIN_RANGE_S: u64 = 4;

/// Scales the durations inside every `[...]` of a PromQL expression (range and subquery):
/// the range to at least MIN_RANGE_S, a subquery step as any duration.
pub(crate) fn scale_expr(expr: &str) -> String {
    let mut out = String::new();
    let mut rest = expr;
    while let Some(open) = rest.find('[') {
        out.push_str(&rest[..=open]);
        let close = rest[open..].find(']').expect("closing ]") + open;
        let inner = &rest[open + 1..close];
        let parts: Vec<String> = inner
            .split(':')
            .enumerate()
            .map(|(i, p)| match (i, p.trim()) {
                (_, "") => p.to_string(),
                (0, range) => {
                    let secs =
                        duration_secs(range).unwrap_or_else(|| panic!("not a duration: {range:?}"));
                    format!("{}s", (secs / TIME_SCALE).max(MIN_RANGE_S))
                }
                (_, step) => scaled(step),
            })
            .collect();
        out.push_str(&parts.join(":"));
        out.push(']');
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    out
}

pub(crate) fn key(k: &str) -> Yaml {
    Yaml::String(k.to_string())
}

/// Rewrites one rules document in place; returns how many `for:` and ranges it changed.
pub(crate) fn scale_rules(doc: &mut Yaml) -> (usize, usize) {
    let (mut fors, mut ranges) = (0, 0);
    let Yaml::Hash(top) = doc else {
        panic!("rules file is not a mapping")
    };
    let Some(Yaml::Array(groups)) = top.get_mut(&key("groups")) else {
        panic!("no groups")
    };
    for g in groups {
        let Yaml::Hash(g) = g else { continue };
        let Some(Yaml::Array(rules)) = g.get_mut(&key("rules")) else {
            continue;
        };
        for r in rules {
            let Yaml::Hash(r) = r else { continue };
            if let Some(Yaml::String(f)) = r.get_mut(&key("for")) {
                *f = scaled(f);
                fors += 1;
            }
            if let Some(Yaml::String(e)) = r.get_mut(&key("expr")) {
                let new = scale_expr(e);
                ranges += e.matches('[').count();
                *e = new;
            }
        }
    }
    (fors, ranges)
}

/// Writes the fast variant of every alerts/*.rules.yml into `dir`.
pub(crate) fn write_fast_rules(dir: &Path) -> Vec<PathBuf> {
    write_fast_rules_of(&root().join("alerts"), dir)
}

/// Writes the fast variant of every `*.rules.yml` of `src` into `dir`.
pub(crate) fn write_fast_rules_of(src: &Path, dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(src)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".rules.yml"))
        .collect();
    files.sort();
    assert!(!files.is_empty());
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let mut doc = YamlLoader::load_from_str(&text).unwrap().remove(0);
        scale_rules(&mut doc);
        let mut s = String::new();
        YamlEmitter::new(&mut s).dump(&doc).unwrap();
        let dest = dir.join(f.file_name().unwrap());
        std::fs::write(&dest, s).unwrap();
        out.push(dest);
    }
    out
}

/// The shipped Alertmanager config with its receivers' integrations removed: routing, grouping
/// and inhibition stay as shipped, nothing is sent anywhere.
pub(crate) fn write_alertmanager_config(path: &Path) {
    let text =
        std::fs::read_to_string(root().join("deploy/alertmanager/alertmanager.yml")).unwrap();
    let mut doc = YamlLoader::load_from_str(&text).unwrap().remove(0);
    let Yaml::Hash(top) = &mut doc else {
        panic!("not a mapping")
    };
    let Some(Yaml::Array(receivers)) = top.get_mut(&key("receivers")) else {
        panic!("no receivers")
    };
    for r in receivers.iter_mut() {
        let Yaml::Hash(h) = r else { continue };
        h.retain(|k, _| *k == key("name"));
    }
    let mut s = String::new();
    YamlEmitter::new(&mut s).dump(&doc).unwrap();
    std::fs::write(path, s).unwrap();
}

pub(crate) fn check_rules(files: &[PathBuf]) {
    let out = Command::new("promtool")
        .args(["check", "rules"])
        .args(files)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "promtool rejects the generated rules: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn duration_scaling() {
    assert_eq!(duration_secs("5m"), Some(300));
    assert_eq!(duration_secs("1h30m"), Some(5400));
    assert_eq!(duration_secs("500ms"), Some(0));
    assert_eq!(duration_secs("5x"), None);
    assert_eq!(scaled("1h"), "60s");
    assert_eq!(scaled("30s"), "1s");
    assert_eq!(
        scale_expr("increase(x[5m]) > 10 and rate(y[1h:1m]) and z[30m]"),
        "increase(x[5s]) > 10 and rate(y[60s:1s]) and z[30s]"
    );
    assert_eq!(scale_expr("last_over_time(x[2m])"), "last_over_time(x[4s])");
    assert_eq!(scale_expr("a > 7200"), "a > 7200");
}

#[test]
fn fast_rules_are_generated_scaled_and_valid() {
    let tmp = TempDir::new("fast-rules");
    let files = write_fast_rules(tmp.path());
    let mut fors = 0;
    for f in &files {
        let doc = YamlLoader::load_from_str(&std::fs::read_to_string(f).unwrap())
            .unwrap()
            .remove(0);
        for g in doc["groups"].as_vec().unwrap() {
            for r in g["rules"].as_vec().unwrap() {
                if let Some(d) = r["for"].as_str() {
                    fors += 1;
                    let secs = duration_secs(d).unwrap();
                    assert!((1..=60).contains(&secs), "{d}");
                }
                let e = r["expr"].as_str().unwrap();
                assert!(
                    !e.contains("m]") && !e.contains("h]"),
                    "unscaled range in {e}"
                );
            }
        }
    }
    // Same number of alerts with `for:` as the real rules.
    let real: usize = std::fs::read_dir(root().join("alerts"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".rules.yml"))
        .map(|p| {
            std::fs::read_to_string(p)
                .unwrap()
                .lines()
                .filter(|l| l.trim_start().starts_with("for:"))
                .count()
        })
        .sum();
    assert_eq!(fors, real);
    if require_tool("promtool") {
        check_rules(&files);
    }
}

// ---------------------------------------------------------------------------------------------
// Processes and HTTP.
