//! The judgement of a scenario run: the report, and what did not hold.

use super::*;

/// The judgement of a run: its report and what does not hold.
pub(crate) struct Verdict {
    pub(crate) report: String,
    pub(crate) missing: Vec<String>,
    pub(crate) wrong: Vec<String>,
    pub(crate) steady_in_am: Vec<String>,
    pub(crate) steady_firing: BTreeSet<String>,
    pub(crate) empty: Vec<String>,
}

impl Observed {
    /// The report of the run, and what did not hold.
    pub(crate) fn judge(
        &self,
        clusters: &[Cluster],
        mon: &Monitoring,
        tier_of_job: &BTreeMap<String, (String, String)>,
        started: Instant,
    ) -> Verdict {
        let mut v = Verdict {
            report: String::from("scenario | expected alert | reached Alertmanager after the fault | state | receivers | other alerts of the cluster\n"),
            missing: Vec::new(),
            wrong: Vec::new(),
            steady_in_am: self
                .seen
                .keys()
                .filter(|(c, _)| c == "steady")
                .map(|(_, a)| a.clone())
                .collect(),
            steady_firing: self.steady_firing.clone(),
            empty: Vec::new(),
        };
        self.judge_targets_absent(&mut v, tier_of_job, mon.prom_started);
        for c in clusters {
            self.judge_cluster(&mut v, c, mon.prom_started);
        }
        self.judge_dashboards(&mut v, started);
        eprintln!("\n{}", v.report);
        let _ = std::fs::write(
            Path::new(env!("CARGO_TARGET_TMPDIR")).join("engine-sim-e2e-report.txt"),
            &v.report,
        );
        v
    }

    /// The Prometheus without targets raised ExporterTargetsAbsent for every job.
    fn judge_targets_absent(
        &self,
        v: &mut Verdict,
        tier_of_job: &BTreeMap<String, (String, String)>,
        prom_started: Instant,
    ) {
        let Observed {
            seen, absent_jobs, ..
        } = self;
        let jobs: BTreeSet<String> = tier_of_job.keys().cloned().collect();
        match seen.get(&(NO_TARGETS.to_owned(), "ExporterTargetsAbsent".to_owned())) {
            Some((at, state)) => v.report.push_str(&format!(
                "{NO_TARGETS} (a Prometheus without targets) | ExporterTargetsAbsent | {:.0}s (from Prometheus start) for jobs {absent_jobs:?} | {state} | -\n",
                at.saturating_duration_since(prom_started).as_secs_f64()
            )),
            None => v.report.push_str(&format!(
                "{NO_TARGETS} (a Prometheus without targets) | ExporterTargetsAbsent | NOT SEEN | - | -\n"
            )),
        }
        if *absent_jobs != jobs {
            v.missing.push(format!(
                "{NO_TARGETS}: ExporterTargetsAbsent for {jobs:?}, seen for {absent_jobs:?}"
            ));
        }
    }

    /// One cluster: its expected alerts reached Alertmanager, its silent ones did not, each
    /// reached its receiver, and a hung engine never left it without a page.
    fn judge_cluster(&self, v: &mut Verdict, c: &Cluster, prom_started: Instant) {
        let Observed {
            seen,
            routed,
            hung_gaps,
            hung_resolved,
            ..
        } = self;
        let receivers_of = |c: &Cluster, a: &str| -> String {
            routed
                .get(&(c.scenario.clone(), a.to_owned()))
                .map(|r| r.iter().cloned().collect::<Vec<_>>().join("+"))
                .unwrap_or_else(|| "-".into())
        };
        let others: Vec<String> = seen
            .keys()
            .filter(|(cl, a)| *cl == c.scenario && !c.expect.contains(a))
            .map(|(_, a)| a.clone())
            .collect();
        let from = if c.fault_after.is_some() {
            "fault"
        } else {
            "Prometheus start (fault from the start)"
        };
        if c.expect.is_empty() {
            v.report.push_str(&format!(
                "{} | (none) | - | - | {}\n",
                c.scenario,
                others.join(", ")
            ));
        }
        for a in &c.expect {
            match seen.get(&(c.scenario.clone(), a.clone())) {
                Some((at, state)) => {
                    // From the fault, or for a scenario faulty from the start, from when
                    // Prometheus could first see it.
                    let from_instant = match c.fault_after {
                        Some(f) => c.sim_started + Duration::from_secs(f),
                        None => prom_started,
                    };
                    let t = at.saturating_duration_since(from_instant).as_secs_f64();
                    v.report.push_str(&format!(
                        "{} | {a} | {t:.0}s (from {from}) | {state} | {} | {}\n",
                        c.scenario,
                        receivers_of(c, a),
                        others.join(", ")
                    ));
                }
                None => {
                    v.report.push_str(&format!(
                        "{} | {a} | NOT SEEN | - | - | {}\n",
                        c.scenario,
                        others.join(", ")
                    ));
                    v.missing.push(format!("{}: {a}", c.scenario));
                }
            }
        }
        // The topology matrix' promises: what must stay silent, where each alert goes, and
        // that a hung engine never leaves the cluster without an active page.
        for a in &c.silent {
            if seen.contains_key(&(c.scenario.clone(), a.clone())) {
                v.wrong.push(format!(
                    "{}: {a} reached Alertmanager, must stay silent",
                    c.scenario
                ));
            }
        }
        for (a, want) in &c.receivers {
            let got = routed.get(&(c.scenario.clone(), a.clone()));
            if !got.is_some_and(|r| r.contains(want)) {
                v.wrong.push(format!(
                    "{}: {a} must reach {want} while active, reached {got:?}",
                    c.scenario
                ));
            }
        }
        if c.hung_at.is_some() {
            let gap = hung_gaps.get(&c.scenario).map_or(Duration::ZERO, |g| g.1);
            let resolved = hung_resolved.get(&c.scenario);
            v.report.push_str(&format!(
                "{} | (hung engine) {} left Alertmanager {} after the hang; longest time without an active critical alert: {:.1}s\n",
                c.scenario,
                c.expect.first().map_or("-", String::as_str),
                resolved.map_or("never".into(), |d| format!("{:.0}s", d.as_secs_f64())),
                gap.as_secs_f64()
            ));
            if resolved.is_none() {
                v.wrong.push(format!(
                    "{}: the paging alert never resolved after the hang: the hand-over was not exercised",
                    c.scenario
                ));
            }
            // Polls are 0.5 s apart and a hand-over may fall between two: more than 2 s
            // without any page is silence.
            if gap > Duration::from_secs(2) {
                v.wrong.push(format!(
                    "{}: no critical alert active for {:.1}s after the engine hung",
                    c.scenario,
                    gap.as_secs_f64()
                ));
            }
        } else if c.sidecar_faults.iter().any(|f| f == "hang-engine") {
            v.wrong
                .push(format!("{}: the engine was never hung", c.scenario));
        }
    }

    /// Every dashboard query had data for the steady cluster, unless empty by design.
    fn judge_dashboards(&self, v: &mut Verdict, started: Instant) {
        let Observed {
            steady_pending,
            steady_firing,
            panels,
            panel_ok,
            ..
        } = self;
        let empty: Vec<String> = panels
            .iter()
            .filter(|p| !panel_ok.get(&p.expr).copied().unwrap_or(false))
            .filter(|p| !EMPTY_BY_DESIGN.iter().any(|(m, _)| p.expr.contains(m)))
            .map(|p| format!("{}: {}", p.title, p.expr))
            .collect();
        let exempt: Vec<String> = panels
            .iter()
            .filter_map(|p| {
                EMPTY_BY_DESIGN
                    .iter()
                    .find(|(m, _)| p.expr.contains(m))
                    .map(|(_, why)| {
                        format!(
                            "{} ({why}; had data: {})",
                            p.title,
                            panel_ok.get(&p.expr).copied().unwrap_or(false)
                        )
                    })
            })
            .collect();
        v.report.push_str(&format!(
            "\nsteady: pending at some point: {steady_pending:?}; firing: {steady_firing:?}\n\
             dashboards: {} queries, {} with data for the steady cluster, {} exempt:\n  {}\n\
             total e2e time {:.0}s\n",
            panels.len(),
            panel_ok.values().filter(|v| **v).count(),
            exempt.len(),
            exempt.join("\n  "),
            started.elapsed().as_secs_f64()
        ));
        v.empty = empty;
    }
}

impl Verdict {
    pub(crate) fn assert_holds(&self) {
        assert!(
            self.missing.is_empty(),
            "expected alerts never reached Alertmanager: {:?}\n{}",
            self.missing,
            self.report
        );
        assert!(
            self.wrong.is_empty(),
            "the topology matrix does not hold:\n{}\n{}",
            self.wrong.join("\n"),
            self.report
        );
        assert!(
            self.steady_in_am.is_empty() && self.steady_firing.is_empty(),
            "the steady cluster raised alerts: {:?} {:?}",
            self.steady_in_am,
            self.steady_firing
        );
        assert!(
            self.empty.is_empty(),
            "dashboard queries without data in the steady state:\n{}",
            self.empty.join("\n")
        );
    }
}
