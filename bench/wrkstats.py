#!/usr/bin/env python3
"""Parse wrk output and aggregate benchmark rounds (stdlib only).

    wrkstats.py parse WRK_OUTPUT_FILE [--target NAME] [--round N]
        Print one JSON object: req_per_s, p50_ms, p99_ms, requests, non_2xx_3xx,
        socket_errors {connect, read, write, timeout}, errors (their sum).

    wrkstats.py report ROUNDS_JSONL --meta META_JSON --json-out PATH
                       [--baseline NAME] [--gate NAME]... [--min-throughput-ratio R]
                       [--max-p99-ratio R] [--check SPEC]...
        ROUNDS_JSONL holds one `parse` object per line (with target and round). Print a
        Markdown report on stdout (medians per target, ratios against the baseline, PASS/MISS
        for each check, memory of the processes in meta["rss"]) and write the same results as
        JSON to PATH.

        --gate NAME is short for the two checks
            NAME:throughput>=<min-throughput-ratio>*<baseline>
            NAME:p99<=<max-p99-ratio>*<baseline>
        --check SPEC is one target, TARGET:METRIC(>=|<=)LIMIT, where METRIC is
            throughput  median req/s
            p99         median p99 latency (ms)
            rss         VmRSS in MB after the run (from meta["rss"][TARGET]["vmrss_mb"])
        and LIMIT is either a number (absolute) or FACTOR*OTHER (FACTOR times OTHER's same
        metric), e.g. sidecar-auth-redis:throughput>=10*apache-oidc, sidecar-auth-memory:rss<=30.
        A throughput or p99 check of a target whose runs had errors is a MISS; a check whose
        value or reference has no data is reported as "no data" (neither PASS nor MISS).
"""

import argparse
import json
import re
import statistics
import sys

# wrk's format_time() units (src/units.c): us, ms, s, m, h.
_TIME_UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}
# wrk's format_metric() suffixes, used by "N requests in ..." when large.
_METRIC = {"": 1, "k": 1e3, "M": 1e6, "G": 1e9}


def to_ms(text):
    m = re.fullmatch(r"([0-9.]+)(us|ms|s|m|h)", text.strip())
    if not m:
        raise ValueError(f"unrecognised wrk time {text!r}")
    return round(float(m.group(1)) * _TIME_UNITS_MS[m.group(2)], 6)


def parse_wrk(text):
    out = {}
    m = re.search(r"^Requests/sec:\s+([0-9.]+)", text, re.M)
    if not m:
        raise ValueError("no 'Requests/sec:' line in wrk output")
    out["req_per_s"] = float(m.group(1))

    dist = re.search(r"Latency Distribution\s*\n((?:\s+[0-9.]+%\s+\S+\s*\n)+)", text)
    if not dist:
        raise ValueError("no 'Latency Distribution' block (was wrk run with --latency?)")
    pct = {}
    for line in dist.group(1).splitlines():
        p, v = line.split()
        pct[p] = to_ms(v)
    for key, name in (("50%", "p50_ms"), ("99%", "p99_ms")):
        if key not in pct:
            raise ValueError(f"no {key} line in the latency distribution")
        out[name] = pct[key]

    m = re.search(r"^\s*([0-9.]+)([kMG]?) requests in ([0-9.]+\w+)", text, re.M)
    out["requests"] = int(float(m.group(1)) * _METRIC[m.group(2)]) if m else None
    out["elapsed_ms"] = to_ms(m.group(3)) if m else None

    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    out["non_2xx_3xx"] = int(m.group(1)) if m else 0
    sock = {"connect": 0, "read": 0, "write": 0, "timeout": 0}
    m = re.search(r"Socket errors:\s+connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if m:
        sock = dict(zip(sock, map(int, m.groups())))
    out["socket_errors"] = sock
    out["errors"] = out["non_2xx_3xx"] + sum(sock.values())
    return out


def cmd_parse(args):
    with open(args.file, encoding="utf-8", errors="replace") as f:
        text = f.read()
    try:
        res = parse_wrk(text)
    except ValueError as e:
        sys.stderr.write(f"wrkstats: {args.file}: {e}\n--- wrk output ---\n{text}\n")
        return 1
    if args.target is not None:
        res = {"target": args.target, "round": args.round, **res}
    print(json.dumps(res))
    return 0


def _fmt(x, digits):
    return "n/a" if x is None else f"{x:,.{digits}f}"


_METRICS = {  # metric -> (summary key or None for rss, label, unit)
    "throughput": ("req_per_s_median", "throughput", "req/s"),
    "p99": ("p99_ms_median", "p99", "ms"),
    "rss": (None, "VmRSS", "MB"),
}
_CHECK_RE = re.compile(
    r"^(?P<target>[^:]+):(?P<metric>\w+)\s*(?P<op>>=|<=)\s*(?P<factor>[0-9]*\.?[0-9]+)"
    r"(?:\s*\*\s*(?P<other>\S+))?$"
)


def parse_check(spec):
    m = _CHECK_RE.match(spec.strip())
    if not m or m.group("metric") not in _METRICS:
        raise argparse.ArgumentTypeError(
            f"bad check {spec!r}: expected TARGET:METRIC>=LIMIT or TARGET:METRIC<=LIMIT, "
            f"METRIC one of {', '.join(_METRICS)}, LIMIT a number or FACTOR*OTHER_TARGET"
        )
    if m.group("metric") == "rss" and m.group("other"):
        raise argparse.ArgumentTypeError(f"bad check {spec!r}: rss limits are absolute (MB)")
    return {
        "spec": spec.strip(),
        "target": m.group("target"),
        "metric": m.group("metric"),
        "op": m.group("op"),
        "factor": float(m.group("factor")),
        "other": m.group("other"),
    }


def _metric_value(metric, name, summary, rss):
    key = _METRICS[metric][0]
    if key is None:
        return (rss.get(name) or {}).get("vmrss_mb")
    s = summary.get(name)
    return s[key] if s else None


def evaluate_check(c, summary, rss):
    """Return the check with value, limit, ratio (if relative) and verdict filled in."""
    value = _metric_value(c["metric"], c["target"], summary, rss)
    ref = _metric_value(c["metric"], c["other"], summary, rss) if c["other"] else None
    res = dict(c)
    res["value"] = value
    if c["other"]:
        res["reference"] = ref
        res["ratio"] = value / ref if value is not None and ref else None
        measured = res["ratio"]
    else:
        measured = value
    errors = c["metric"] != "rss" and any(
        summary.get(n, {}).get("errors_total") for n in (c["target"], c["other"]) if n
    )
    if measured is None:
        res["verdict"] = "no data"
    elif errors:
        res["verdict"] = "MISS"
    else:
        ok = measured >= c["factor"] if c["op"] == ">=" else measured <= c["factor"]
        res["verdict"] = "PASS" if ok else "MISS"
    res["errors"] = bool(errors)
    return res


def cmd_report(args):
    with open(args.meta, encoding="utf-8") as f:
        meta = json.load(f)
    rows = []
    with open(args.rounds, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]

    order = meta.get("targets_order") or []
    by_target = {}
    for r in rows:
        by_target.setdefault(r["target"], []).append(r)
        if r["target"] not in order:
            order.append(r["target"])

    summary = {}
    for name in order:
        rs = sorted(by_target.get(name, []), key=lambda r: r["round"])
        if not rs:
            continue
        summary[name] = {
            "url": meta.get("target_urls", {}).get(name),
            "rounds": len(rs),
            "req_per_s_median": statistics.median(r["req_per_s"] for r in rs),
            "p50_ms_median": statistics.median(r["p50_ms"] for r in rs),
            "p99_ms_median": statistics.median(r["p99_ms"] for r in rs),
            "req_per_s_rounds": [r["req_per_s"] for r in rs],
            "p99_ms_rounds": [r["p99_ms"] for r in rs],
            "errors_total": sum(r["errors"] for r in rs),
            "non_2xx_3xx_total": sum(r["non_2xx_3xx"] for r in rs),
            "socket_errors_total": {
                k: sum(r["socket_errors"][k] for r in rs) for k in ("connect", "read", "write", "timeout")
            },
        }

    p = print
    p(f"## Results ({meta.get('rounds')} interleaved rounds x {meta.get('duration_s')} s, "
      f"wrk -t{meta.get('threads')} -c{meta.get('connections')})")
    p()
    p("| target | req/s median | p50 ms median | p99 ms median | req/s per round | errors |")
    p("|---|---:|---:|---:|---|---:|")
    for name, s in summary.items():
        per_round = ", ".join(f"{x:,.0f}" for x in s["req_per_s_rounds"])
        p(f"| {name} | {_fmt(s['req_per_s_median'], 0)} | {_fmt(s['p50_ms_median'], 3)} | "
          f"{_fmt(s['p99_ms_median'], 3)} | {per_round} | {s['errors_total']} |")
    p()

    errs = {n: s for n, s in summary.items() if s["errors_total"]}
    for name, s in errs.items():
        p(f"WARNING: {name}: {s['non_2xx_3xx_total']} non-2xx/3xx responses, socket errors "
          f"{s['socket_errors_total']} -- its numbers are not comparable.")
    if errs:
        p()

    ratios = {}
    verdicts = {}
    base = summary.get(args.baseline)
    if base:
        p(f"### Ratios against {args.baseline}")
        p()
        p("| target | throughput ratio | p99 ratio | throughput ratio per round (median) |")
        p("|---|---:|---:|---|")
        base_rounds = {r["round"]: r["req_per_s"] for r in by_target.get(args.baseline, [])}
        for name, s in summary.items():
            if name == args.baseline:
                continue
            tr = s["req_per_s_median"] / base["req_per_s_median"] if base["req_per_s_median"] else None
            lr = s["p99_ms_median"] / base["p99_ms_median"] if base["p99_ms_median"] else None
            # Each round against the baseline of the same round: drift of the machine between
            # rounds cancels out, so these spread less than the ratio of the medians.
            paired = [
                r["req_per_s"] / base_rounds[r["round"]]
                for r in sorted(by_target[name], key=lambda r: r["round"])
                if base_rounds.get(r["round"])
            ]
            pm = statistics.median(paired) if paired else None
            ratios[name] = {"throughput_ratio": tr, "p99_ratio": lr,
                            "throughput_ratio_per_round": paired,
                            "throughput_ratio_per_round_median": pm}
            listed = ", ".join(f"{x:.3f}" for x in paired)
            p(f"| {name}/{args.baseline} | {_fmt(tr, 3)} | {_fmt(lr, 3)} | {listed} ({_fmt(pm, 3)}) |")
        p()
    else:
        p(f"(baseline {args.baseline!r} has no data: no ratios)")
        p()

    rss = meta.get("rss") or {}
    checks = []
    for name in args.gate or []:
        checks.append(parse_check(f"{name}:throughput>={args.min_throughput_ratio}*{args.baseline}"))
        checks.append(parse_check(f"{name}:p99<={args.max_p99_ratio}*{args.baseline}"))
    checks += args.check or []
    results = [evaluate_check(c, summary, rss) for c in checks]
    if results:
        p("### Targets")
        p()
        p("| target | check | measured | goal | verdict |")
        p("|---|---|---:|---|---|")
        for r in results:
            label, unit = _METRICS[r["metric"]][1], _METRICS[r["metric"]][2]
            op = "≥" if r["op"] == ">=" else "≤"
            if r["other"]:
                what = f"{label} vs {r['other']}"
                measured = "n/a" if r["ratio"] is None else f"{r['ratio']:,.3f}×"
                limit = f"{op} {r['factor']:g}× {r['other']}"
            else:
                what = label
                measured = "n/a" if r["value"] is None else f"{r['value']:,.1f} {unit}"
                limit = f"{op} {r['factor']:g} {unit}"
            verdict = r["verdict"] if r["verdict"] == "no data" else f"**{r['verdict']}**"
            if r["errors"]:
                verdict += " (errors in the runs)"
            p(f"| {r['target']} | {what} | {measured} | {limit} | {verdict} |")
            verdicts.setdefault(r["target"], {})[what] = r["verdict"]
        p()

    if rss:
        p("### Memory after the run (from /proc/<pid>/status)")
        p()
        p("| process | VmRSS MB | VmHWM (peak) MB |")
        p("|---|---:|---:|")
        for name, m in rss.items():
            p(f"| {name} | {_fmt(m.get('vmrss_mb'), 1)} | {_fmt(m.get('vmhwm_mb'), 1)} |")
        p()

    result = {
        "meta": meta,
        "baseline": args.baseline,
        "thresholds": {"min_throughput_ratio": args.min_throughput_ratio, "max_p99_ratio": args.max_p99_ratio},
        "summary": summary,
        "ratios": ratios,
        "checks": results,
        "verdicts": verdicts,
        "rounds": rows,
    }
    with open(args.json_out, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2)
        f.write("\n")
    return 0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    pp = sub.add_parser("parse", help="parse one wrk output file into JSON")
    pp.add_argument("file")
    pp.add_argument("--target")
    pp.add_argument("--round", type=int)
    rp = sub.add_parser("report", help="aggregate rounds into the Markdown table and JSON")
    rp.add_argument("rounds", help="JSON lines, one `parse` object per wrk run")
    rp.add_argument("--meta", required=True, help="JSON file with run metadata")
    rp.add_argument("--json-out", required=True)
    rp.add_argument("--baseline", default="nginx-proxy")
    rp.add_argument("--gate", action="append", help="target judged against the thresholds (repeatable)")
    rp.add_argument("--min-throughput-ratio", type=float, default=0.9)
    rp.add_argument("--max-p99-ratio", type=float, default=1.5)
    rp.add_argument("--check", action="append", type=parse_check,
                    help="TARGET:METRIC>=LIMIT or <=LIMIT (repeatable), see above")
    args = ap.parse_args(argv)
    return cmd_parse(args) if args.cmd == "parse" else cmd_report(args)


if __name__ == "__main__":
    sys.exit(main())
