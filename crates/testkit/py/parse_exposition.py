"""Parses a Prometheus exposition from stdin with the official Python client's parsers.

Usage: parse_exposition.py openmetrics|text
Prints JSON: {family: {"type": ..., "samples": [[name, labels, value, exemplar_or_null]]}}.
A parse error exits non-zero with the parser's message on stderr.
"""
import json
import math
import sys

from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_om
from prometheus_client.parser import text_string_to_metric_families as parse_text


def number(v):
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return v


def main():
    fmt = sys.argv[1]
    data = sys.stdin.read()
    parse = parse_om if fmt == "openmetrics" else parse_text
    out = {}
    for fam in parse(data):
        samples = []
        for s in fam.samples:
            ex = None
            if getattr(s, "exemplar", None) is not None:
                ex = {"labels": s.exemplar.labels, "value": number(s.exemplar.value)}
            if s.timestamp is not None:
                raise SystemExit(f"client-side timestamp on {s.name}")
            samples.append([s.name, s.labels, number(s.value), ex])
        out[fam.name] = {"type": fam.type, "unit": getattr(fam, "unit", ""), "samples": samples}
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
