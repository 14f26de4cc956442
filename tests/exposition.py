"""A strict reader of the Prometheus text format (0.0.4), for the metrics tests.

Stricter than Prometheus itself where the format leaves room for sloppiness
that dashboards trip over: every family has exactly one HELP and one TYPE
line, both before its samples; a family's samples are contiguous and only
carry its own name (no _sum/_count: we export no summaries or histograms);
no sample (name and label set) appears twice; label names are valid and
values correctly escaped; every value is a float.
"""
from __future__ import annotations

import re

NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL = r"[a-zA-Z_][a-zA-Z0-9_]*"
_HELP = re.compile(rf"# HELP ({NAME}) (.*)$")
_TYPE = re.compile(rf"# TYPE ({NAME}) (counter|gauge|untyped)$")
_SAMPLE = re.compile(rf"({NAME})(\{{.*\}})? (\S+)$")
_LABEL_PAIR = re.compile(rf'({LABEL})="((?:[^"\\\n]|\\[\\"n])*)"(,|$)')


class FormatError(AssertionError):
    pass


def parse(text: str) -> dict[str, dict]:
    """name -> {"help": str, "type": str, "samples": {labels tuple: value}}."""
    if not text.endswith("\n"):
        raise FormatError("the exposition must end with a newline")
    families: dict[str, dict] = {}
    current: str | None = None
    for n, line in enumerate(text[:-1].split("\n"), 1):
        if m := _HELP.match(line):
            name = m.group(1)
            if name in families:
                raise FormatError(f"line {n}: family {name} appears twice")
            families[name] = {"help": m.group(2), "type": None, "samples": {}}
            current = name
        elif m := _TYPE.match(line):
            if m.group(1) != current or families[current]["type"] is not None:
                raise FormatError(f"line {n}: TYPE not right after its family's HELP: {line}")
            if families[current]["samples"]:
                raise FormatError(f"line {n}: TYPE after samples")
            families[current]["type"] = m.group(2)
        elif line.startswith("#") or not line:
            raise FormatError(f"line {n}: unexpected line {line!r}")
        else:
            m = _SAMPLE.match(line)
            if not m:
                raise FormatError(f"line {n}: not a sample: {line!r}")
            name, labels, value = m.groups()
            if name != current or families[name]["type"] is None:
                raise FormatError(f"line {n}: sample {name} outside its family (HELP/TYPE first)")
            key = _labels(labels[1:-1] if labels else "", n)
            if key in families[name]["samples"]:
                raise FormatError(f"line {n}: duplicate sample {line!r}")
            try:
                families[name]["samples"][key] = float(value)
            except ValueError:
                raise FormatError(f"line {n}: bad value {value!r}") from None
    for name, fam in families.items():
        if fam["type"] is None:
            raise FormatError(f"family {name} has no TYPE")
        if fam["type"] == "counter" and not name.endswith("_total"):
            raise FormatError(f"counter {name} does not end in _total")
    return families


def _labels(inner: str, n: int) -> tuple[tuple[str, str], ...]:
    pairs = []
    pos = 0
    while pos < len(inner):
        m = _LABEL_PAIR.match(inner, pos)
        if not m:
            raise FormatError(f"line {n}: bad labels {{{inner}}}")
        pairs.append((m.group(1), m.group(2)))
        pos = m.end()
    names = [k for k, _ in pairs]
    if len(set(names)) != len(names):
        raise FormatError(f"line {n}: a label twice in {{{inner}}}")
    return tuple(sorted(pairs))
