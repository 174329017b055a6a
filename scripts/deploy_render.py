#!/usr/bin/env python3
"""Helm and config checks for scripts/validate-deploy (stdlib + helm_python only).

  deploy_render.py helm CHART OUT.yaml [VALUES.yaml ...]
      helm lint (with those values, merged in order as helm's -f does), render the chart to
      one multi-document OUT.yaml (NOTES.txt left out) and check the ConfigMap's
      sso-sidecar.toml.
  deploy_render.py toml FILE.toml
      check a sso-sidecar TOML file.

The TOML check parses the file (tomllib) and compares its keys with those of
config/sso-sidecar.example.toml (commented-out keys included), because the binary rejects
unknown TOML keys with exit 78 -- a typo would only show up when the pods crash-loop.
"""
import pathlib
import re
import sys
import tomllib

import helm_python as helm

ROOT = pathlib.Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "config" / "sso-sidecar.example.toml"


def known_keys():
    """{table or "": {key, ...}} from the annotated example, including its commented-out keys."""
    keys, table = {"": set()}, ""
    for line in EXAMPLE.read_text().splitlines():
        if m := re.match(r"^\[([a-z_]+)\]", line):
            table = m.group(1)
            keys.setdefault(table, set())
        elif m := re.match(r"^#?\s?([a-z_]+)\s*=", line):
            keys[table].add(m.group(1))
    return keys


def check_toml(text, where):
    """Problems in one sso-sidecar TOML document, as strings."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        return [f"{where}: not valid TOML: {e}"]
    known, problems = known_keys(), []
    for key, value in doc.items():
        if isinstance(value, dict):
            if key not in known:
                problems.append(f"{where}: unknown table [{key}]")
                continue
            problems += [f"{where}: unknown key {key}.{k}" for k in value if k not in known[key]]
        elif key not in known[""]:
            problems.append(f"{where}: unknown key {key}")
    return problems


def merged(base, over):
    """`over` on top of `base`, maps merged key by key, anything else replaced (as helm -f)."""
    out = dict(base)
    for k, v in over.items():
        out[k] = merged(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def helm_check(chart, out, *values_files):
    values = {}
    for f in values_files:
        values = merged(values, helm.values_from_yaml(pathlib.Path(f).read_text()) or {})
    problems = []

    report = helm.lint(chart, values)
    for msg in report["messages"]:  # severity 1=info, 2=warning, 3=error
        print(f"  lint {['?', 'INFO', 'WARNING', 'ERROR'][msg['severity']]}: {msg['path']}: {msg['error']}")
        if msg["severity"] >= 2:
            problems.append(f"helm lint: {msg['error']}")
    problems += [f"helm lint: {e}" for e in report["errors"]]

    with helm.Chart.load(chart) as ch:
        rendered = ch.render(values, name="sso", namespace="openrag", is_install=True)
    docs = []
    for path, text in sorted(rendered.items()):
        if path.endswith("NOTES.txt") or not text.strip():
            continue
        for doc in re.split(r"^---\s*$", text, flags=re.M):
            if not re.search(r"^kind:", doc, flags=re.M):
                continue  # comments only
            docs.append(doc.strip("\n"))
            obj = helm.values_from_yaml(doc)
            if obj.get("kind") == "ConfigMap" and "sso-sidecar.toml" in obj.get("data", {}):
                problems += check_toml(obj["data"]["sso-sidecar.toml"], f"{path} sso-sidecar.toml")
    pathlib.Path(out).write_text("---\n".join(d + "\n" for d in docs))
    print(f"  rendered {len(docs)} objects to {out}")
    return problems


def main(argv):
    if len(argv) >= 3 and argv[0] == "helm":
        problems = helm_check(*argv[1:])
    elif len(argv) == 2 and argv[0] == "toml":
        problems = check_toml(pathlib.Path(argv[1]).read_text(), argv[1])
    else:
        sys.exit(__doc__)
    for p in problems:
        print(f"  ERROR {p}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except helm.HelmError as e:  # a template `fail`, a malformed chart or values file
        print(f"  ERROR {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)
