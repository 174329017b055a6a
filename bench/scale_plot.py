#!/usr/bin/env python3
"""Plots of bench/scale's CSVs (matplotlib): scale_plot.py OUT_DIR

Reads OUT_DIR/scale-{connections,sessions,bodies}.csv (whichever exist) and writes
OUT_DIR/scale-{connections,sessions,bodies}.svg; prints the path of each SVG written.
"""
import csv
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

COLORS = {"nginx-proxy": "tab:gray", "sidecar": "tab:blue", "sidecar-auth-redis": "tab:red",
          "nginx-direct": "tab:green", "redis": "tab:red", "memory": "tab:purple",
          "redis-nocache": "tab:brown"}


def read(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def num(x):
    return None if x in (None, "") else float(x)


def human(x, _pos=None):
    for unit, f in (("M", 1e6), ("k", 1e3)):
        if x >= f:
            v = x / f
            return f"{v:.0f}{unit}" if v == int(v) else f"{v:g}{unit}"
    return f"{x:g}"


def save(fig, out, name, title):
    """Titles, lays out and writes OUT/scale-NAME.svg; returns its path."""
    fig.suptitle(title)
    fig.tight_layout()
    path = os.path.join(out, f"scale-{name}.svg")
    fig.savefig(path)
    return path


def connections(out):
    rows = read(os.path.join(out, "scale-connections.csv"))
    targets = list(dict.fromkeys(r["target"] for r in rows))
    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    panels = [("req_per_s", "throughput (req/s)"), ("cpu_us_per_req", "CPU per request (µs, user + system)"),
              ("p99_ms", "p99 latency (ms)"),
              ("rss_peak_mb", "VmRSS (MB): peak in round 1 (solid), 2 s after (dashed)")]
    for ax, (key, label) in zip(axes.flat, panels):
        for t in targets:
            pts = sorted((int(r["connections"]), num(r.get(key))) for r in rows if r["target"] == t)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=t, color=COLORS.get(t))
            if key == "rss_peak_mb" and any(r.get("rss_settled_mb") for r in rows):
                pts = sorted((int(r["connections"]), num(r.get("rss_settled_mb")))
                             for r in rows if r["target"] == t)
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=".", ls="--",
                        color=COLORS.get(t), alpha=0.7)
        ax.set_xscale("log")
        ax.set_xticks(sorted({int(r["connections"]) for r in rows}))
        ax.xaxis.set_major_formatter(FuncFormatter(human))
        ax.set_xlabel("concurrent connections (log)")
        ax.set_ylabel(label)
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
        if key == "rss_peak_mb":
            ax.axhline(64, color="black", lw=0.8, ls=":", label="64 MB target")
    axes[0][0].legend(fontsize=8)
    axes[1][1].legend(fontsize=8)
    return save(fig, out, "connections", "sso-sidecar vs nginx keep-alive proxy: cost against concurrent connections (GET /, medians)")


def sessions(out):
    rows = read(os.path.join(out, "scale-sessions.csv"))
    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    panels = [("req_per_s", "throughput (req/s)"),
              ("sidecar_cpu_us_per_req", "CPU per request (µs): sidecar, and redis-server (dotted)"),
              ("cache_hit_rate", "client-side cache hit rate (%)"), ("mem", "resident memory (MB)")]
    styles = {"uniform": "-", "skewed": "--", "single": ""}
    for ax, (key, label) in zip(axes.flat, panels):
        for store in ("redis", "redis-nocache", "memory"):
            for dist in ("single", "uniform", "skewed"):
                sel = sorted((int(r["sessions"]), r) for r in rows if r["store"] == store and r["dist"] == dist)
                if not sel:
                    continue
                xs = [n for n, _ in sel]
                shown = "redis, no client cache" if store == "redis-nocache" else store
                name = f"{shown}, {dist}" if dist != "single" else f"{shown}, 1 session"
                if key == "mem":
                    if store == "redis-nocache":
                        continue
                    ys = [num(r["sidecar_rss_peak_mb"]) for _, r in sel]
                    ax.plot(xs, ys, ls=styles[dist], marker="o" if dist != "single" else "s",
                            color=COLORS[store], label=f"sidecar ({name})")
                    if store == "redis" and dist != "skewed":
                        ys = [num(r["redis_rss_peak_mb"]) for _, r in sel]
                        ax.plot(xs, ys, ls=":" if dist == "uniform" else "", marker="^", color="tab:orange",
                                label="redis-server" + (" (1 session)" if dist == "single" else ""))
                    continue
                ys = [num(r.get(key)) for _, r in sel]
                if key == "sidecar_cpu_us_per_req" and store == "redis" and dist != "skewed":
                    ax.plot(xs, [num(r.get("redis_cpu_us_per_req")) for _, r in sel], ls=":",
                            marker="^", color="tab:orange", label=f"redis-server ({name})")
                if key == "cache_hit_rate":
                    if store != "redis":
                        continue
                    ys = [None if y is None else 100 * y for y in ys]
                ax.plot(xs, ys, ls=styles[dist], marker="o" if dist != "single" else "s",
                        color=COLORS[store], alpha=1 if dist != "skewed" else 0.7, label=name)
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(human))
        ax.set_xlabel("live sessions in the store (log)")
        ax.set_ylabel(label)
        if key == "mem":
            ax.set_yscale("log")
            ax.yaxis.set_major_formatter(FuncFormatter(lambda y, _p: f"{y:g}"))
            ax.yaxis.set_minor_formatter(FuncFormatter(lambda y, _p: f"{y:g}" if str(y)[0] in "25" else ""))
        else:
            ax.set_ylim(bottom=0)
        if key == "cache_hit_rate":
            ax.set_ylim(0, 105)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    return save(fig, out, "sessions", "sso-sidecar OIDC sessions: cost against live sessions (GET /, a cookie per request, medians)")


def bodies(out):
    rows = read(os.path.join(out, "scale-bodies.csv"))
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.8))
    targets = list(dict.fromkeys(r["target"] for r in rows))
    sizes = sorted({int(r["size_bytes"]) for r in rows})

    def size_fmt(x, _pos=None):
        for unit, f in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
            if x >= f:
                return f"{x / f:g} {unit}"
        return f"{x:g} B"

    for ax, direction in zip(axes[:2], ("download", "upload")):
        for t in targets:
            pts = sorted((int(r["size_bytes"]), num(r["mib_per_s"])) for r in rows
                         if r["target"] == t and r["direction"] == direction)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=t, color=COLORS.get(t))
        ax.set_title(direction)
        ax.set_ylabel("throughput (MiB/s)")
        ax.set_ylim(bottom=0)
    ax = axes[2]
    idle = next((num(r["idle_rss_mb"]) for r in rows if r["target"] == "sidecar" and r["idle_rss_mb"]), None)
    for direction, ls in (("download", "-"), ("upload", "--")):
        for t in targets:
            pts = sorted((int(r["size_bytes"]), num(r["peak_vmhwm_mb"]) or num(r["peak_rss_sampled_mb"]))
                         for r in rows if r["target"] == t and r["direction"] == direction)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ls=ls, color=COLORS.get(t),
                    label=f"{t} {direction}")
    if idle:
        ax.axhline(idle, color="tab:blue", lw=0.8, ls=":", label=f"sidecar idle ({idle:.0f} MB)")
        ax.axhline(2 * idle, color="black", lw=0.8, ls=":", label="2× sidecar idle (target)")
    ax.set_title("peak resident memory (VmHWM)")
    ax.set_ylabel("MB")
    ax.set_ylim(bottom=0)
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xticks(sizes)
        ax.xaxis.set_major_formatter(FuncFormatter(size_fmt))
        ax.set_xlabel("body size (log)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    return save(fig, out, "bodies", "Request and response bodies through the proxies (curl, medians)")


def main():
    out = sys.argv[1]
    for name, fn in (("connections", connections), ("sessions", sessions), ("bodies", bodies)):
        if os.path.exists(os.path.join(out, f"scale-{name}.csv")):
            print(fn(out))


if __name__ == "__main__":
    main()
