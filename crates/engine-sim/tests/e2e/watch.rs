//! Watching Alertmanager, Prometheus and the dashboards' queries while the scenarios play.

use super::*;

/// What the watch saw of Alertmanager, Prometheus and the dashboards' queries.
#[derive(Default)]
pub(crate) struct Observed {
    /// (cluster, alert) → (first seen in Alertmanager, state then)
    pub(crate) seen: BTreeMap<(String, String), (Instant, String)>,
    /// (cluster, alert) → the receivers Alertmanager routed it to, while it was active (not
    /// inhibited or silenced).
    pub(crate) routed: BTreeMap<(String, String), BTreeSet<String>>,
    /// Hung clusters: the longest time after the hang with no active critical alert.
    pub(crate) hung_gaps: BTreeMap<String, (Option<Instant>, Duration)>,
    /// Hung clusters: when the alert that paged before the hang left Alertmanager (its gauge
    /// went stale), which proves the hand-over was exercised.
    pub(crate) hung_resolved: BTreeMap<String, Duration>,
    pub(crate) steady_pending: BTreeSet<String>,
    pub(crate) steady_firing: BTreeSet<String>,
    pub(crate) panels: Vec<Panel>,
    pub(crate) panel_ok: BTreeMap<String, bool>,
    pub(crate) dashboards_checked: bool,
    /// The jobs the Prometheus without targets raised ExporterTargetsAbsent for.
    pub(crate) absent_jobs: BTreeSet<String>,
}

impl Observed {
    /// Watches until every expected alert reached Alertmanager, or the deadline; plays the
    /// sidecar faults and hangs the engines of `hang-engine` clusters on the way.
    pub(crate) fn watch(
        &mut self,
        clusters: &mut [Cluster],
        mon: &Monitoring,
        tier_of_job: &BTreeMap<String, (String, String)>,
        sims_started: Instant,
    ) {
        let steady_instances: String = clusters
            .iter()
            .find(|c| c.scenario == "steady")
            .unwrap()
            .targets
            .iter()
            .map(|(_, t)| t.clone())
            .collect::<Vec<_>>()
            .join("|");
        let onset = sims_started + Duration::from_secs(FAULT_AFTER_S);
        let deadline = onset + FIRE_DEADLINE;
        self.panels = dashboard_panels();
        loop {
            let now = Instant::now();
            self.look_at_alertmanager(&mon.am_url, clusters, now);
            self.hang_engines(clusters);
            self.look_at_prometheus(&mon.prom_url);
            self.look_at_dashboards(mon, &steady_instances);
            let seen = &self.seen;
            let all_seen = clusters.iter().all(|c| {
                c.expect
                    .iter()
                    .all(|a| seen.contains_key(&(c.scenario.clone(), a.clone())))
                    // A hung engine is watched for 20 s: its gauges go stale 5 s after the hang.
                    && c
                        .hung_at
                        .is_none_or(|t| t.elapsed() > Duration::from_secs(20))
            }) && self.absent_jobs.len() == tier_of_job.len();
            if (all_seen && self.dashboards_checked && now > onset + Duration::from_secs(20))
                || now > deadline
            {
                break;
            }
            for c in clusters.iter_mut() {
                play_sidecar_fault(c);
                for p in &mut c.procs {
                    assert!(p.alive(), "{} exited:\n{}", p.name, p.tail());
                }
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// The alerts in Alertmanager: when each was first seen, where it was routed, which
    /// jobs the Prometheus without targets reported, and the pages of hung clusters.
    fn look_at_alertmanager(&mut self, am_url: &str, clusters: &[Cluster], now: Instant) {
        let Some(v) = get_json(&format!("{am_url}/api/v2/alerts")) else {
            return;
        };
        let Observed {
            seen,
            routed,
            hung_gaps,
            hung_resolved,
            absent_jobs,
            ..
        } = self;
        let mut paging: BTreeSet<String> = BTreeSet::new();
        let mut active: BTreeSet<(String, String)> = BTreeSet::new();
        for a in v.as_array().into_iter().flatten() {
            let cluster = a["labels"]["cluster"].as_str().unwrap_or("").to_string();
            let name = a["labels"]["alertname"].as_str().unwrap_or("").to_string();
            let state = a["status"]["state"].as_str().unwrap_or("").to_string();
            if state == "active" {
                active.insert((cluster.clone(), name.clone()));
                let r = routed.entry((cluster.clone(), name.clone())).or_default();
                for rc in a["receivers"].as_array().into_iter().flatten() {
                    if let Some(n) = rc["name"].as_str() {
                        r.insert(n.to_owned());
                    }
                }
                if a["labels"]["severity"] == "critical" {
                    paging.insert(cluster.clone());
                }
            }
            if cluster == NO_TARGETS && name == "ExporterTargetsAbsent" {
                if let Some(job) = a["labels"]["job"].as_str() {
                    absent_jobs.insert(job.to_owned());
                }
            }
            seen.entry((cluster, name)).or_insert((now, state));
        }
        // A hung engine: from the hang on, some critical alert of the cluster is active at
        // every look (a gap is how long none was).
        for c in clusters {
            let Some(hung) = c.hung_at else { continue };
            if let Some(first) = c.expect.first() {
                if !active.contains(&(c.scenario.clone(), first.clone())) {
                    hung_resolved
                        .entry(c.scenario.clone())
                        .or_insert_with(|| now.saturating_duration_since(hung));
                }
            }
            let g = hung_gaps
                .entry(c.scenario.clone())
                .or_insert((None, Duration::ZERO));
            if paging.contains(&c.scenario) {
                g.0 = None;
            } else {
                let since = *g.0.get_or_insert(now.max(hung));
                g.1 = g.1.max(now - since);
            }
        }
    }

    /// hang-engine: the simulator stops once the cluster's first expected alert is in
    /// Alertmanager.
    fn hang_engines(&self, clusters: &mut [Cluster]) {
        let seen = &self.seen;
        for c in clusters.iter_mut() {
            if c.hung_at.is_none()
                && c.sidecar_faults.iter().any(|f| f == "hang-engine")
                && c.expect
                    .first()
                    .is_some_and(|a| seen.contains_key(&(c.scenario.clone(), a.clone())))
            {
                let sim = format!("{}-sim", c.scenario);
                let p = c.procs.iter().find(|p| p.name == sim).expect("simulator");
                signal(p, "STOP");
                c.hung_at = Some(Instant::now());
                eprintln!("e2e: {sim} stopped (SIGSTOP): the engines hang");
            }
        }
    }

    /// What the steady cluster has pending or firing in Prometheus.
    fn look_at_prometheus(&mut self, prom_url: &str) {
        if let Some(v) = get_json(&format!("{prom_url}/api/v1/alerts")) {
            for a in v["data"]["alerts"].as_array().into_iter().flatten() {
                if a["labels"]["cluster"] == "steady" {
                    let name = a["labels"]["alertname"].as_str().unwrap_or("").to_string();
                    if a["state"] == "firing" {
                        self.steady_firing.insert(name.clone());
                    }
                    self.steady_pending.insert(name);
                }
            }
        }
    }

    /// Dashboards: once the 10 s rate windows are full, until each query has had data.
    fn look_at_dashboards(&mut self, mon: &Monitoring, steady_instances: &str) {
        let (prom_url, prom_started) = (&mon.prom_url, mon.prom_started);
        let Observed {
            panels,
            panel_ok,
            dashboards_checked,
            ..
        } = self;
        if !*dashboards_checked && prom_started.elapsed() > Duration::from_secs(12) {
            for p in panels.iter() {
                if panel_ok.get(&p.expr).copied().unwrap_or(false) {
                    continue;
                }
                let q = substitute(&p.expr, steady_instances);
                let url = format!("{prom_url}/api/v1/query?query={}", urlencode(&q));
                let has = get_json(&url)
                    .map(|v| {
                        assert_eq!(v["status"], "success", "{}: {q}: {v}", p.title);
                        !v["data"]["result"].as_array().unwrap().is_empty()
                    })
                    .unwrap_or(false);
                panel_ok.insert(p.expr.clone(), has);
            }
            *dashboards_checked =
                panel_ok.values().all(|ok| *ok) || prom_started.elapsed() > Duration::from_secs(40);
        }
    }
}
