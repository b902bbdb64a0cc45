#!/usr/bin/env python3
"""Draws docs/throughput.svg from the load test's results (standard library only).

    python3 scripts/chart.py RESULTS_DIR docs/throughput.svg

Also writes RESULTS_DIR/table.md: the numbers of every result file as the rows of
BENCHMARKS.md's table, each against its budget.

Left: accepted and delivered events/s of `relay serve` and of the baseline (one
SmartEmailing call per delivery, no coalescing) in each scenario, with the 5 000 events/s
budget. Right: SmartEmailing calls per 1 000 trigger events (log scale), with the budget of 3.
"""

import json
import math
import pathlib
import sys
from xml.sax.saxutils import escape

RELAY = "#1f77b4"
NAIVE = "#ff7f0e"
BUDGET_RATE = 5000
BUDGET_CALLS = 3


def jsonl(results, name):
    path = pathlib.Path(results) / name
    if not path.exists():
        return []
    return [json.loads(l) for l in path.read_text().splitlines() if l.strip()]


def verdict(ok):
    return "pass" if ok else "**miss**"


def table(results):
    """Markdown rows: what, figure, baseline, ratio (relay ÷ baseline), budget, verdict."""
    rows = []
    micro = {(r["group"], r["name"]): r for r in jsonl(results, "micro.jsonl")}
    for (group, name), r in sorted(micro.items()):
        us = r["mean_ns"] / 1000
        figure = f"{us:.2f} µs" if us >= 1 else f"{r['mean_ns']:.0f} ns"
        if r.get("elements"):
            figure += f" ({r['mean_ns'] / r['elements']:.0f} ns/item)"
        budget, ok = "", None
        if group == "pipeline":
            budget, ok = "< 50 µs", us < 50
        rows.append((f"`{group}/{name}`", figure, "", "", budget, ok))
    load_rows = {(r["impl"], r["scenario"]): r for r in jsonl(results, "load.jsonl")}
    for s in ("batch100", "batch1", "rate1000"):
        relay, naive = load_rows.get(("relay", s)), load_rows.get(("naive", s))
        if not relay:
            continue
        n = naive or {}
        for key, label, unit, budget, better, check in (
            ("accepted_events_per_s", "accepted", "events/s", ">= 5 000" if s != "rate1000" else "", "higher", lambda v: v >= 5000),
            ("delivered_events_per_s", "delivered", "events/s", ">= 5 000" if s != "rate1000" else "", "higher", lambda v: v >= 5000),
            ("se_trigger_calls_per_1000_trigger_events", "SmartEmailing /trigger-event calls per 1 000 triggers", "", "<= 3", "lower", lambda v: v <= 3),
            ("p50", "accept latency p50", "ms", "", "lower", None),
            ("p99", "accept latency p99", "ms", "< 10 ms" if s == "rate1000" else "", "lower", lambda v: v < 10),
            ("peak_rss_mib", "peak RSS", "MiB", "< 64 MB" if s == "rate1000" else "", "lower", lambda v: v < 64),
        ):
            get = (lambda r: r.get("accept_latency_ms", {}).get(key)) if key in ("p50", "p99") else (lambda r: r.get(key))
            v, b = get(relay), get(n)
            if not isinstance(v, (int, float)):
                continue
            ratio = ""
            if isinstance(b, (int, float)) and b and v:
                # relay ÷ baseline; `better` says which way is good.
                ratio = f"{v / b:.3g}× ({better} is better)"
            ok = check(v) if (budget and check) else None
            rows.append((f"{s}: {label}", f"{fmt(v)} {unit}".strip(), f"{fmt(b)} {unit}".strip() if isinstance(b, (int, float)) else "n/a", ratio, budget, ok))
    for r in jsonl(results, "lambda.jsonl"):
        f = r["function"]
        if r["bench"] == "lambda":
            rows.append((f"{f}: init (median of {r['init_samples']}; max)", f"{r['init_ms_median']:.1f} ms; {r['init_ms_max']:.1f} ms", "", "", "< 50 ms", r["init_ms_max"] < 50))
            rows.append((f"{f}: binary / zipped", f"{r['binary_bytes'] / 1e6:.2f} MB / {r['zipped_bytes'] / 1e6:.2f} MB", "", "", "zipped < 6 MB", r["zipped_bytes"] < 6e6))
        else:
            rows.append((f"{f}: invoke `{r['fixture']}` (first; warm median, max)", f"{r['first_invoke_ms']:.1f} ms; {r['warm_invoke_ms_median']:.1f} ms, {r['warm_invoke_ms_max']:.1f} ms", "", "", "", None))
    out = ["| what | figure | baseline | relay ÷ baseline | budget | verdict |", "|---|---|---|---|---|---|"]
    for what, fig, base, ratio, budget, ok in rows:
        out.append(f"| {what} | {fig} | {base} | {ratio} | {budget} | {'' if ok is None else verdict(ok)} |")
    return "\n".join(out) + "\n"


def load(results):
    rows = []
    path = pathlib.Path(results) / "load.jsonl"
    for line in path.read_text().splitlines():
        if line.strip():
            rows.append(json.loads(line))
    return {(r["impl"], r["scenario"]): r for r in rows}


def fmt(v):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    if v >= 100:
        return f"{v:,.0f}".replace(",", " ")
    if v >= 10:
        return f"{v:.0f}"
    return f"{v:.1f}"


def text(x, y, s, size=12, anchor="start", weight="normal", fill="#222"):
    return (
        f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}" '
        f'font-weight="{weight}" fill="{fill}">{escape(s)}</text>'
    )


def main(results, out):
    data = load(results)
    scenarios = [s for s in ("batch100", "batch1", "rate1000") if ("relay", s) in data]
    labels = {
        "batch100": "batches of 100",
        "batch1": "1 event per request",
        "rate1000": "1 000 events/s offered",
    }
    metrics = [("accepted_events_per_s", "accepted"), ("delivered_events_per_s", "delivered")]
    parts = []
    w, h = 960, 440
    parts.append(
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
        f'viewBox="0 0 {w} {h}" font-family="Helvetica, Arial, sans-serif">'
    )
    parts.append(f'<rect width="{w}" height="{h}" fill="white"/>')
    parts.append(text(20, 28, "relay serve vs. the obvious implementation (one call per delivery)", 16, weight="bold"))

    # Left panel: events/s, linear scale.
    x0, y0, pw, ph = 70, 60, 560, 290
    values = [BUDGET_RATE]
    for s in scenarios:
        for imp in ("relay", "naive"):
            for m, _ in metrics:
                v = data.get((imp, s), {}).get(m)
                if isinstance(v, (int, float)):
                    values.append(v)
    top = max(values) * 1.15
    step = 10 ** math.floor(math.log10(top / 4))
    step = step * (5 if top / step > 20 else 2 if top / step > 8 else 1)
    tick = 0.0
    while tick <= top:
        y = y0 + ph - tick / top * ph
        parts.append(f'<line x1="{x0}" x2="{x0 + pw}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e5e5e5"/>')
        parts.append(text(x0 - 6, y + 4, fmt(tick) if tick else "0", 10, "end", fill="#666"))
        tick += step
    parts.append(text(x0, y0 - 10, "events/s", 12, fill="#444"))
    group_w = pw / max(len(scenarios), 1)
    bar_w = group_w / 6
    for i, s in enumerate(scenarios):
        gx = x0 + i * group_w + bar_w / 2
        k = 0
        for m, mlabel in metrics:
            for imp, color in (("relay", RELAY), ("naive", NAIVE)):
                v = data.get((imp, s), {}).get(m)
                bx = gx + k * bar_w + (bar_w * 0.5 if k >= 2 else 0)
                if isinstance(v, (int, float)):
                    bh = v / top * ph
                    opacity = "1" if mlabel == "accepted" else "0.55"
                    parts.append(
                        f'<rect x="{bx:.1f}" y="{y0 + ph - bh:.1f}" width="{bar_w * 0.9:.1f}" '
                        f'height="{bh:.1f}" fill="{color}" fill-opacity="{opacity}"/>'
                    )
                    parts.append(text(bx + bar_w * 0.45, y0 + ph - bh - 4, fmt(v), 9, "middle"))
                k += 1
            parts.append(
                text(gx + (k - 2) * bar_w + (bar_w * 0.5 if k > 2 else 0) + bar_w * 0.9, y0 + ph + 14, mlabel, 9, "middle", fill="#666")
            )
        parts.append(text(x0 + i * group_w + group_w / 2, y0 + ph + 30, labels[s], 11, "middle"))
    yb = y0 + ph - BUDGET_RATE / top * ph
    parts.append(
        f'<line x1="{x0}" x2="{x0 + pw}" y1="{yb:.1f}" y2="{yb:.1f}" stroke="#d62728" '
        f'stroke-dasharray="6,4" stroke-width="1.5"/>'
    )
    parts.append(text(x0 + pw - 4, yb - 5, "budget 5 000 events/s", 10, "end", fill="#d62728"))
    parts.append(f'<line x1="{x0}" x2="{x0}" y1="{y0}" y2="{y0 + ph}" stroke="#888"/>')
    parts.append(f'<line x1="{x0}" x2="{x0 + pw}" y1="{y0 + ph}" y2="{y0 + ph}" stroke="#888"/>')

    # Right panel: calls per 1000 trigger events, log scale.
    rx0, rpw = 720, 200
    lo, hi = 0.1, 10000.0

    def ly(v):
        v = min(max(v, lo), hi)
        return y0 + ph - (math.log10(v) - math.log10(lo)) / (math.log10(hi) - math.log10(lo)) * ph

    for p in range(-1, 5):
        y = ly(10**p)
        parts.append(f'<line x1="{rx0}" x2="{rx0 + rpw}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e5e5e5"/>')
        parts.append(text(rx0 - 6, y + 4, fmt(10**p) if p >= 0 else "0.1", 10, "end", fill="#666"))
    parts.append(text(rx0 - 40, y0 - 10, "SmartEmailing calls per 1 000 triggers", 12, fill="#444"))
    s = "batch100" if ("relay", "batch100") in data else (scenarios[0] if scenarios else None)
    for j, (imp, color, label) in enumerate((("relay", RELAY, "relay serve"), ("naive", NAIVE, "baseline"))):
        v = data.get((imp, s), {}).get("se_trigger_calls_per_1000_trigger_events") if s else None
        bx = rx0 + 30 + j * 80
        if isinstance(v, (int, float)):
            y = ly(v)
            parts.append(f'<rect x="{bx}" y="{y:.1f}" width="50" height="{y0 + ph - y:.1f}" fill="{color}"/>')
            parts.append(text(bx + 25, y - 4, fmt(v), 10, "middle"))
        parts.append(text(bx + 25, y0 + ph + 14, label, 10, "middle"))
    yb = ly(BUDGET_CALLS)
    parts.append(
        f'<line x1="{rx0}" x2="{rx0 + rpw}" y1="{yb:.1f}" y2="{yb:.1f}" stroke="#d62728" '
        f'stroke-dasharray="6,4" stroke-width="1.5"/>'
    )
    parts.append(text(rx0 + rpw, yb - 5, "budget 3", 10, "end", fill="#d62728"))
    parts.append(text(rx0 + rpw / 2, y0 + ph + 30, labels.get(s, ""), 11, "middle"))
    parts.append(f'<line x1="{rx0}" x2="{rx0}" y1="{y0}" y2="{y0 + ph}" stroke="#888"/>')
    parts.append(f'<line x1="{rx0}" x2="{rx0 + rpw}" y1="{y0 + ph}" y2="{y0 + ph}" stroke="#888"/>')

    # Legend and footnote.
    ly0 = h - 28
    parts.append(f'<rect x="{x0}" y="{ly0 - 10}" width="12" height="12" fill="{RELAY}"/>')
    parts.append(text(x0 + 18, ly0, "relay serve (SQLite, coalesced bulk calls)", 11))
    parts.append(f'<rect x="{x0 + 290}" y="{ly0 - 10}" width="12" height="12" fill="{NAIVE}"/>')
    parts.append(text(x0 + 308, ly0, "baseline: one SmartEmailing call per delivery", 11))
    parts.append(text(x0 + 610, ly0, "pale bars: delivered", 11, fill="#666"))
    load_avg = data.get(("relay", "batch100"), {}).get("load_avg_1m")
    parts.append(
        text(w - 10, h - 8, f"generated by scripts/chart.py from load.jsonl; 1-min load during the run: {fmt(load_avg)}", 9, "end", fill="#888")
    )
    parts.append("</svg>")
    pathlib.Path(out).parent.mkdir(parents=True, exist_ok=True)
    pathlib.Path(out).write_text("\n".join(parts) + "\n")
    (pathlib.Path(results) / "table.md").write_text(table(results))


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
