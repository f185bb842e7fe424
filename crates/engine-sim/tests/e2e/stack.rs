//! The processes of a stack (exporters, simulators, Prometheus) and the HTTP reads the
//! tests make of them.

use super::*;

pub(crate) struct Proc {
    pub(crate) name: String,
    pub(crate) child: Child,
    pub(crate) log: PathBuf,
}

impl Proc {
    pub(crate) fn spawn(name: &str, bin: &Path, args: &[String], dir: &Path) -> Proc {
        let log = dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(bin)
            .args(args)
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        Proc {
            name: name.to_string(),
            child,
            log,
        }
    }

    pub(crate) fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub(crate) fn tail(&self) -> String {
        let s = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A real Prometheus on 127.0.0.1:`port` with `config`, its data and log under `dir`.
pub(crate) fn spawn_prometheus(name: &str, config: &Path, port: u16, dir: &Path) -> Proc {
    Proc::spawn(
        name,
        Path::new("prometheus"),
        &[
            format!("--config.file={}", config.display()),
            format!(
                "--storage.tsdb.path={}",
                dir.join(format!("{name}-data")).display()
            ),
            format!("--web.listen-address=127.0.0.1:{port}"),
            "--log.level=warn".into(),
        ],
        dir,
    )
}

pub(crate) fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub(crate) fn get_json(url: &str) -> Option<serde_json::Value> {
    serde_json::from_str(&http_get(url)?).ok()
}

/// GET returning None on any error (a server that is not up yet is expected while waiting).
pub(crate) fn http_get(url: &str) -> Option<String> {
    ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(10))
        .build()
        .get(url)
        .call()
        .ok()?
        .into_string()
        .ok()
}

pub(crate) fn metric_value(text: &str, series: &str) -> Option<f64> {
    testkit::sample_value(text, series)
}

// ---------------------------------------------------------------------------------------------
// The stack.

pub(crate) fn signal(p: &Proc, sig: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{sig}"), &p.child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success(), "kill -{sig} {}", p.name);
}
