#!/usr/bin/env python3
"""Renders the bundle from the mixin: alert and recording rules (jsonnet) and dashboards
(dashboards/generate.py), from the defaults in mixin/config.libsonnet or from your overrides.

  python3 mixin/render.py                          # re-render the shipped files in place
  python3 mixin/render.py --check                  # fail when a shipped file differs (CI)
  python3 mixin/render.py --config my.libsonnet --out DIR [--tests]
                                                   # your config: DIR/alerts/*.rules.yml, DIR/dashboards/*.json;
                                                   # --tests: DIR/alerts/tests/ for promtool, DIR/config.json

my.libsonnet holds only what you change, e.g. { _config+:: { clusterLabel: 'dc' } }; see
docs/mixin.md. Needs `jsonnet` (Debian jsonnet, or go-jsonnet) and, for the dashboards, the
PyPI package grafana-foundation-sdk. In place, it first writes mixin/tiers.json from the
[tier] tables of crates/*/schema.toml: the one list of tiers.
"""
import argparse
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib

MIXIN = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(MIXIN)
TIER_KEYS = ("name", "binary", "job", "metric_prefix", "self_prefix", "port")


def tiers_json():
    """mixin/tiers.json's text: every crate's [tier] table, in scrape-port order."""
    tiers = []
    for path in glob.glob(os.path.join(ROOT, "crates", "*", "schema.toml")):
        with open(path, "rb") as f:
            schema = tomllib.load(f)
        tier = schema["tier"]
        # The engine's metrics, for the dashboard of a tier that has no hand-made one.
        tier["metrics"] = [{k: m[k] for k in ("name", "type", "help", "unit", "labels") if k in m}
                           for m in schema.get("metrics", []) if m.get("source", "engine") == "engine"]
        tier["port"] = int(tier["web_listen_address"].rsplit(":", 1)[1])
        tiers.append(tier)
    tiers.sort(key=lambda t: t["port"])
    doc = {"tiers": [dict({k: t[k] for k in TIER_KEYS}, metrics=t["metrics"]) for t in tiers]}
    return json.dumps(doc, indent=2) + "\n"


def jsonnet(args, config):
    exe = shutil.which("jsonnet")
    if exe is None:
        sys.exit("render: jsonnet not found (apt-get install jsonnet, or go-jsonnet)")
    cmd = [exe, "-J", MIXIN] + args
    if config:
        cmd += ["--tla-code-file", "overrides=" + os.path.abspath(config)]
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


def render(out, config, cfg):
    """Writes the rule files and dashboards of `config` (resolved: `cfg`) under out/alerts and
    out/dashboards."""
    os.makedirs(os.path.join(out, "alerts"), exist_ok=True)
    os.makedirs(os.path.join(out, "dashboards"), exist_ok=True)
    jsonnet(["-S", "-m", os.path.join(out, "alerts"), os.path.join(MIXIN, "render.jsonnet")], config)
    cfg_path = os.path.join(out, "dashboards", ".config.json")
    with open(cfg_path, "w") as f:
        json.dump(cfg, f)
    subprocess.run([sys.executable, os.path.join(ROOT, "dashboards", "generate.py"),
                    "--config", cfg_path, "--out", os.path.join(out, "dashboards")], check=True,
                   stdout=subprocess.DEVNULL)
    os.remove(cfg_path)


def config_json(config):
    return json.loads(jsonnet([os.path.join(MIXIN, "config.jsonnet")], config))


SEVERITIES = ("critical", "warning", "info", "none")
DURATION = re.compile(r"^([0-9]+(ms|s|m|h|d|w|y))+$")


def config_problems(default, cfg):
    """What a config sets that the mixin does not read, or sets to a value it cannot use: a
    misspelt knob is refused, never silently ignored."""
    problems = []

    def unknown(where, got, known, listed=True):
        seen = ", ".join(sorted(set(known) - {"human", "names"}))
        hint = f" (known: {seen})" if listed else " (mixin/config.libsonnet lists them)"
        problems.extend(f"{where}{k}: no such knob{hint}" for k in sorted(set(got) - set(known)))

    unknown("", cfg, default)
    unknown("jobs.", cfg.get("jobs", {}), default["jobs"])
    unknown("dashboards.", cfg.get("dashboards", {}), default["dashboards"])
    unknown("alerts.", cfg.get("alerts", {}), default["alerts"], listed=False)
    for name, knobs in cfg.get("alerts", {}).items():
        if name not in default["alerts"]:
            continue
        unknown(f"alerts.{name}.", knobs, default["alerts"][name])
        if knobs.get("severity") not in SEVERITIES:
            problems.append(f"alerts.{name}.severity: {knobs.get('severity')!r} is not one of {', '.join(SEVERITIES)}")
        if knobs.get("for") is not None and not DURATION.match(str(knobs["for"])):
            problems.append(f"alerts.{name}.for: {knobs['for']!r} is not a Prometheus duration")
        for k, v in knobs.items():
            if k not in ("for", "severity") and (not isinstance(v, (int, float)) or isinstance(v, bool)):
                problems.append(f"alerts.{name}.{k}: {v!r} is not a number")
    slo_keys = set().union(*(slo.keys() for slo in default["slos"]))
    for i, slo in enumerate(cfg.get("slos", [])):
        unknown(f"slos[{i}].", slo, slo_keys)
        if not 0 < slo.get("objective", 0) < 1:
            problems.append(f"slos[{i}].objective: {slo.get('objective')!r} is not between 0 and 1")
    if not str(cfg.get("runbookBase", "")).endswith("/"):
        problems.append("runbookBase: must end with / (the alert name and .md follow it)")
    return problems


def write_threshold_tests(out, config):
    with open(os.path.join(out, "alerts", "tests", "thresholds.test.yml"), "w") as f:
        f.write(jsonnet(["-S", os.path.join(MIXIN, "tests", "thresholds.jsonnet")], config))


class SuiteRewriter:
    """The shipped promtool suite (alerts/tests), written for another config: job names, the
    cluster and instance labels, severities and the runbook base follow it. The cases of an alert
    whose `for` or thresholds the config changes are left out: their expected values no longer
    hold, and thresholds.test.yml tests those knobs for the config instead."""

    def __init__(self, default, cfg):
        self.cfg = cfg
        self.jobs = {default["jobs"][k]: v for k, v in cfg["jobs"].items() if default["jobs"][k] != v}
        self.labels = {"cluster": cfg["clusterLabel"], "instance": cfg["instanceLabel"]}
        self.base = (default["runbookBase"], cfg["runbookBase"])
        self.tier_jobs = {t["job"] for t in default["tiers"]}
        knobs = lambda c, a: {k: v for k, v in c["alerts"][a].items() if k != "severity"}
        self.changed = {a for a in cfg["alerts"] if knobs(cfg, a) != knobs(default, a)}
        if cfg["slos"] != default["slos"] or cfg["sloBurns"] != default["sloBurns"]:
            self.changed |= {a for a in cfg["alerts"] if "BudgetBurn" in a}
        self.dropped = 0

    def selector(self, text):
        """A series selector of the suite, e.g. up{job="tx-engines",instance="tx1:9090"}."""
        def label(m):
            name, value = m.group(1), m.group(2)
            if name == "job":
                value = self.jobs.get(value, value)
            name = self.labels.get(name, name)
            return f'{m.group(0)[0]}{name}="{value}"' if name else m.group(0)[0].strip("{,")
        return re.sub(r'[{,\s](\w+)="([^"]*)"', label, text)

    def description(self, text):
        for old, new in self.jobs.items():
            if old in self.tier_jobs:
                text = re.sub(r"(?<![\w-])" + re.escape(old) + r"(?![\w-])", lambda _m: new, text)
            else:
                text = text.replace(f"The {old} target", f"The {new} target")
        return text

    def alert(self, name, exp):
        labels = {}
        for k, v in (exp.get("exp_labels") or {}).items():
            if k == "job":
                v = self.jobs.get(v, v)
            elif k == "severity":
                v = self.cfg["alerts"][name]["severity"]
            k = self.labels.get(k, k)
            if k:
                labels[k] = v
        ann = dict(exp.get("exp_annotations") or {})
        if "runbook_url" in ann:
            ann["runbook_url"] = ann["runbook_url"].replace(*self.base)
        if "description" in ann:
            ann["description"] = self.description(ann["description"])
        return {**exp, "exp_labels": labels, "exp_annotations": ann}

    def suite(self, doc):
        for test in doc.get("tests", []):
            for s in test.get("input_series", []):
                s["series"] = self.selector(s["series"])
            kept = []
            for case in test.get("alert_rule_test", []):
                if case["alertname"] in self.changed:
                    self.dropped += 1
                    continue
                case["exp_alerts"] = [self.alert(case["alertname"], e) for e in case.get("exp_alerts") or []]
                kept.append(case)
            test["alert_rule_test"] = kept
        return doc


def write_suite(out, config, default, cfg):
    """alerts/tests for `config` (resolved: `cfg`): the shipped suite rewritten, and the
    threshold tests."""
    import yaml  # PyYAML: only the rewritten suite needs it
    rewriter = SuiteRewriter(default, cfg)
    dst = os.path.join(out, "alerts", "tests")
    os.makedirs(dst, exist_ok=True)
    for path in sorted(glob.glob(os.path.join(ROOT, "alerts", "tests", "*.test.yml"))):
        if os.path.basename(path) == "thresholds.test.yml":
            continue
        with open(path) as f:
            doc = rewriter.suite(yaml.safe_load(f))
        with open(os.path.join(dst, os.path.basename(path)), "w") as f:
            f.write("# Rewritten by mixin/render.py --tests from alerts/tests/%s for %s.\n"
                    % (os.path.basename(path), config))
            yaml.safe_dump(doc, f, sort_keys=False, width=200)
    write_threshold_tests(out, config)
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    print(f"suite: {len(rewriter.changed)} alerts with other for/thresholds "
          f"({rewriter.dropped} hand-written cases left to thresholds.test.yml)")


# The scrape jobs of the database tiers in the example Prometheus configs of deploy/: one job per
# tier of the schemas, in the block between these markers, so a new tier is scraped without a
# hand edit. Everything outside the block is the file's own.
BEGIN = "  # BEGIN tier jobs: rendered by mixin/render.py from the tiers' schemas; edit the template there\n"
END = "  # END tier jobs\n"
HOST_COMMENT = '      # "10.0.1.21:9090" -> host label "10.0.1.21" for joining with node_exporter\n'
HOST_RELABEL = """      - source_labels: [__address__]
        regex: '([^:]+):\\d+'
        target_label: host
"""


def file_sd_job(tier, first):
    return (f"  - job_name: {tier['job']}\n    file_sd_configs:\n      - files: [file_sd/{tier['job']}.json]\n"
            f"    relabel_configs:\n" + (HOST_COMMENT if first else "") + HOST_RELABEL)


def shard_job(tier, first):
    head = f"  - job_name: {tier['job']}\n    file_sd_configs:\n      - files: [file_sd/{tier['job']}.json]\n"
    if not first:
        return head + "    relabel_configs: *shard\n"
    return head + """    relabel_configs: &shard
      - source_labels: [__address__]
        modulus: 2
        target_label: __tmp_hash
        action: hashmod
      - source_labels: [__tmp_hash]
        regex: '0'
        action: keep
""" + HOST_COMMENT + HOST_RELABEL


def ec2_job(tier, first, tags):
    head = (f"  - job_name: {tier['job']}\n    ec2_sd_configs:\n      - region: us-east-1\n"
            f"        port: {tier['port']}\n        filters:\n          - name: tag:Tier\n"
            f"            values: [{tags.get(tier['name'], tier['name'])}]\n")
    if not first:
        return head + "    relabel_configs: *ec2_relabel\n"
    return head + """    relabel_configs: &ec2_relabel
      # Keep the instance label stable and readable: private IP and port.
      - source_labels: [__meta_ec2_private_ip]
        regex: '(.+)'
        target_label: host
      - source_labels: [__meta_ec2_instance_id]
        target_label: instance_id
      - source_labels: [__meta_ec2_availability_zone]
        target_label: zone
      - source_labels: [__meta_ec2_instance_state]
        regex: running
        action: keep
"""


def scrape_configs(cfg):
    """{path: its text with the tier jobs block rendered}, for the deploy configs."""
    tiers = json.loads(tiers_json())["tiers"]
    styles = {
        "deploy/prometheus/prometheus.yml": file_sd_job,
        "deploy/prometheus/prometheus-ec2.yml": lambda t, first: ec2_job(t, first, cfg["ec2TierTags"]),
        "deploy/scale-out/prometheus-shard.yml": shard_job,
    }
    out = {}
    for rel, job in styles.items():
        with open(os.path.join(ROOT, rel)) as f:
            text = f.read()
        if BEGIN not in text or END not in text:
            sys.exit(f"render: {rel} has no tier jobs block ({BEGIN.strip()} ... {END.strip()})")
        head, rest = text.split(BEGIN, 1)
        _, tail = rest.split(END, 1)
        jobs = "\n".join(job(t, i == 0) for i, t in enumerate(tiers))
        out[rel] = head + BEGIN + jobs + END + tail
    return out


def dashboards_libsonnet():
    """mixin/dashboards.libsonnet: grafanaDashboards for jsonnet users, the shipped dashboards."""
    names = shipped_names("dashboards", ".json")
    lines = ["// Rendered by mixin/render.py: the shipped dashboards (the default config), for",
             "// grafanaDashboards. dashboards/generate.py builds them; a config of your own reaches",
             "// them through `python3 mixin/render.py --config ... --out ...` (docs/mixin.md).",
             "{"]
    lines += [f"  '{n}': import '../dashboards/{n}'," for n in names]
    return "\n".join(lines + ["}", ""])


def shipped_names(sub, suffix):
    return sorted(os.path.basename(p) for p in glob.glob(os.path.join(ROOT, sub, "*" + suffix)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", help="a jsonnet file of overrides: { _config+:: { ... } }")
    ap.add_argument("--out", help="where to write alerts/ and dashboards/ (default: the repository)")
    ap.add_argument("--check", action="store_true", help="compare with the shipped files instead of writing")
    ap.add_argument("--tests", action="store_true", help="with --out: also the promtool suite for this config")
    a = ap.parse_args()
    if a.config and not a.out:
        ap.error("--config needs --out: the shipped files are the default rendering")
    if a.out:
        default = config_json(None)
        cfg = config_json(a.config) if a.config else default
        problems = config_problems(default, cfg)
        if problems:
            sys.exit(f"render: {a.config} is refused:\n  " + "\n  ".join(problems))
        render(a.out, a.config, cfg)
        if a.tests:
            write_suite(a.out, a.config, default, cfg)
        print("rendered", a.out)
        return
    tiers = tiers_json()
    with tempfile.TemporaryDirectory() as tmp:
        if a.check:
            with open(os.path.join(MIXIN, "tiers.json")) as f:
                stale = [] if f.read() == tiers else ["mixin/tiers.json"]
        else:
            with open(os.path.join(MIXIN, "tiers.json"), "w") as f:
                f.write(tiers)
            stale = []
        # Resolved after tiers.json is written: a new tier's jobs are in the config.
        default = config_json(None)
        render(tmp, None, default)
        os.makedirs(os.path.join(tmp, "alerts", "tests"))
        write_threshold_tests(tmp, None)
        for sub, suffix in (("alerts", ".rules.yml"), ("alerts/tests", "thresholds.test.yml"), ("dashboards", ".json")):
            rendered = sorted(n for n in os.listdir(os.path.join(tmp, sub)) if n.endswith(suffix))
            for name in sorted(set(rendered) | set(shipped_names(sub, suffix))):
                src, dst = os.path.join(tmp, sub, name), os.path.join(ROOT, sub, name)
                new = open(src).read() if os.path.exists(src) else None
                old = open(dst).read() if os.path.exists(dst) else None
                if new == old:
                    continue
                if a.check:
                    stale.append(f"{sub}/{name}")
                elif new is None:
                    os.remove(dst)
                else:
                    with open(dst, "w") as f:
                        f.write(new)
                    print("wrote", f"{sub}/{name}")
    generated = dict(scrape_configs(default))
    generated["mixin/dashboards.libsonnet"] = dashboards_libsonnet()
    for rel, text in generated.items():
        with open(os.path.join(ROOT, rel)) as f:
            if f.read() == text:
                continue
        if a.check:
            stale.append(rel)
        else:
            with open(os.path.join(ROOT, rel), "w") as f:
                f.write(text)
            print("wrote", rel)
    if stale:
        sys.exit("render: out of date with mixin/ (run python3 mixin/render.py): " + ", ".join(stale))


if __name__ == "__main__":
    main()
