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
        let Observed {
            seen,
            routed,
            hung_gaps,
            hung_resolved,
            steady_pending,
            steady_firing,
            panels,
            panel_ok,
            absent_jobs,
            ..
        } = self;
        let prom_started = mon.prom_started;
        // Report.
        let mut report = String::from("scenario | expected alert | reached Alertmanager after the fault | state | receivers | other alerts of the cluster\n");
        let receivers_of = |c: &Cluster, a: &str| -> String {
            routed
                .get(&(c.scenario.clone(), a.to_owned()))
                .map(|r| r.iter().cloned().collect::<Vec<_>>().join("+"))
                .unwrap_or_else(|| "-".into())
        };
        let mut missing = Vec::new();
        let mut wrong: Vec<String> = Vec::new();
        let jobs: BTreeSet<String> = tier_of_job.keys().cloned().collect();
        match seen.get(&(NO_TARGETS.to_owned(), "ExporterTargetsAbsent".to_owned())) {
            Some((at, state)) => report.push_str(&format!(
                "{NO_TARGETS} (a Prometheus without targets) | ExporterTargetsAbsent | {:.0}s (from Prometheus start) for jobs {absent_jobs:?} | {state} | -\n",
                at.saturating_duration_since(prom_started).as_secs_f64()
            )),
            None => report.push_str(&format!(
                "{NO_TARGETS} (a Prometheus without targets) | ExporterTargetsAbsent | NOT SEEN | - | -\n"
            )),
        }
        if *absent_jobs != jobs {
            missing.push(format!(
                "{NO_TARGETS}: ExporterTargetsAbsent for {jobs:?}, seen for {absent_jobs:?}"
            ));
        }
        for c in clusters {
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
                report.push_str(&format!(
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
                        report.push_str(&format!(
                            "{} | {a} | {t:.0}s (from {from}) | {state} | {} | {}\n",
                            c.scenario,
                            receivers_of(c, a),
                            others.join(", ")
                        ));
                    }
                    None => {
                        report.push_str(&format!(
                            "{} | {a} | NOT SEEN | - | - | {}\n",
                            c.scenario,
                            others.join(", ")
                        ));
                        missing.push(format!("{}: {a}", c.scenario));
                    }
                }
            }
            // The topology matrix' promises: what must stay silent, where each alert goes, and
            // that a hung engine never leaves the cluster without an active page.
            for a in &c.silent {
                if seen.contains_key(&(c.scenario.clone(), a.clone())) {
                    wrong.push(format!(
                        "{}: {a} reached Alertmanager, must stay silent",
                        c.scenario
                    ));
                }
            }
            for (a, want) in &c.receivers {
                let got = routed.get(&(c.scenario.clone(), a.clone()));
                if !got.is_some_and(|r| r.contains(want)) {
                    wrong.push(format!(
                        "{}: {a} must reach {want} while active, reached {got:?}",
                        c.scenario
                    ));
                }
            }
            if c.hung_at.is_some() {
                let gap = hung_gaps.get(&c.scenario).map_or(Duration::ZERO, |g| g.1);
                let resolved = hung_resolved.get(&c.scenario);
                report.push_str(&format!(
                    "{} | (hung engine) {} left Alertmanager {} after the hang; longest time without an active critical alert: {:.1}s\n",
                    c.scenario,
                    c.expect.first().map_or("-", String::as_str),
                    resolved.map_or("never".into(), |d| format!("{:.0}s", d.as_secs_f64())),
                    gap.as_secs_f64()
                ));
                if resolved.is_none() {
                    wrong.push(format!(
                        "{}: the paging alert never resolved after the hang: the hand-over was not exercised",
                        c.scenario
                    ));
                }
                // Polls are 0.5 s apart and a hand-over may fall between two: more than 2 s
                // without any page is silence.
                if gap > Duration::from_secs(2) {
                    wrong.push(format!(
                        "{}: no critical alert active for {:.1}s after the engine hung",
                        c.scenario,
                        gap.as_secs_f64()
                    ));
                }
            } else if c.sidecar_faults.iter().any(|f| f == "hang-engine") {
                wrong.push(format!("{}: the engine was never hung", c.scenario));
            }
        }
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
        report.push_str(&format!(
            "\nsteady: pending at some point: {steady_pending:?}; firing: {steady_firing:?}\n\
             dashboards: {} queries, {} with data for the steady cluster, {} exempt:\n  {}\n\
             total e2e time {:.0}s\n",
            panels.len(),
            panel_ok.values().filter(|v| **v).count(),
            exempt.len(),
            exempt.join("\n  "),
            started.elapsed().as_secs_f64()
        ));
        eprintln!("\n{report}");
        let _ = std::fs::write(
            Path::new(env!("CARGO_TARGET_TMPDIR")).join("engine-sim-e2e-report.txt"),
            &report,
        );
        let steady_in_am: Vec<String> = seen
            .keys()
            .filter(|(c, _)| c == "steady")
            .map(|(_, a)| a.clone())
            .collect();
        Verdict {
            report,
            missing,
            wrong,
            steady_in_am,
            steady_firing: steady_firing.clone(),
            empty,
        }
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
