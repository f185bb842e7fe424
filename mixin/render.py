#!/usr/bin/env python3
"""Renders the bundle from the mixin: alert and recording rules (jsonnet) and dashboards
(dashboards/generate.py), from the defaults in mixin/config.libsonnet or from your overrides.

  python3 mixin/render.py                          # re-render the shipped files in place
  python3 mixin/render.py --check                  # fail when a shipped file differs (CI)
  python3 mixin/render.py --config my.libsonnet --out DIR
                                                   # your config: DIR/alerts/*.rules.yml, DIR/dashboards/*.json

my.libsonnet holds only what you change, e.g. { _config+:: { clusterLabel: 'dc' } }; see
docs/mixin.md. Needs `jsonnet` (Debian jsonnet, or go-jsonnet) and, for the dashboards, the
PyPI package grafana-foundation-sdk. In place, it first writes mixin/tiers.json from the
[tier] tables of crates/*/schema.toml: the one list of tiers.
"""
import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib

MIXIN = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(MIXIN)
TIER_KEYS = ("name", "binary", "job", "metric_prefix", "self_prefix")


def tiers_json():
    """mixin/tiers.json's text: every crate's [tier] table, in scrape-port order."""
    tiers = []
    for path in glob.glob(os.path.join(ROOT, "crates", "*", "schema.toml")):
        with open(path, "rb") as f:
            tier = tomllib.load(f)["tier"]
        tier["port"] = int(tier["web_listen_address"].rsplit(":", 1)[1])
        tiers.append(tier)
    tiers.sort(key=lambda t: t["port"])
    doc = {"tiers": [{k: t[k] for k in TIER_KEYS} for t in tiers]}
    return json.dumps(doc, indent=2) + "\n"


def jsonnet(args, config):
    exe = shutil.which("jsonnet")
    if exe is None:
        sys.exit("render: jsonnet not found (apt-get install jsonnet, or go-jsonnet)")
    cmd = [exe, "-J", MIXIN] + args
    if config:
        cmd += ["--tla-code-file", "overrides=" + os.path.abspath(config)]
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


def render(out, config):
    """Writes the rule files and dashboards of `config` under out/alerts and out/dashboards."""
    os.makedirs(os.path.join(out, "alerts"), exist_ok=True)
    os.makedirs(os.path.join(out, "dashboards"), exist_ok=True)
    jsonnet(["-S", "-m", os.path.join(out, "alerts"), os.path.join(MIXIN, "render.jsonnet")], config)
    cfg_path = os.path.join(out, "dashboards", ".config.json")
    with open(cfg_path, "w") as f:
        f.write(jsonnet([os.path.join(MIXIN, "config.jsonnet")], config))
    subprocess.run([sys.executable, os.path.join(ROOT, "dashboards", "generate.py"),
                    "--config", cfg_path, "--out", os.path.join(out, "dashboards")], check=True,
                   stdout=subprocess.DEVNULL)
    os.remove(cfg_path)


def shipped_names(sub, suffix):
    return sorted(os.path.basename(p) for p in glob.glob(os.path.join(ROOT, sub, "*" + suffix)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", help="a jsonnet file of overrides: { _config+:: { ... } }")
    ap.add_argument("--out", help="where to write alerts/ and dashboards/ (default: the repository)")
    ap.add_argument("--check", action="store_true", help="compare with the shipped files instead of writing")
    a = ap.parse_args()
    if a.config and not a.out:
        ap.error("--config needs --out: the shipped files are the default rendering")
    if a.out:
        render(a.out, a.config)
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
        render(tmp, None)
        for sub, suffix in (("alerts", ".rules.yml"), ("dashboards", ".json")):
            rendered = sorted(os.listdir(os.path.join(tmp, sub)))
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
    if stale:
        sys.exit("render: out of date with mixin/ (run python3 mixin/render.py): " + ", ".join(stale))


if __name__ == "__main__":
    main()
