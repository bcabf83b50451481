"""Chart geometry for the UI's inline SVG: numbers in, coordinates out. The templates draw them, so every label
passes through Jinja's autoescaping like any other text (model names come from configs and battle tables)."""

from __future__ import annotations

import math
from typing import Any

WIDTH = 640
ROW_H = 22
PAD_L, PAD_R, PAD_T, PAD_B = 170, 20, 10, 30
PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22"]


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / n
    step = 10 ** math.floor(math.log10(raw))
    step *= next(m for m in (1, 2, 5, 10) if step * m >= raw)
    first = math.ceil(lo / step) * step
    return [round(first + k * step, 6) for k in range(int((hi - first) / step) + 1)]


def elo_ci(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """A horizontal dot-and-whisker chart: one row per model, its rating and CI."""
    if not rows:
        return {"width": WIDTH, "height": 0, "rows": [], "ticks": []}
    lo = min(r["ci_low"] for r in rows)
    hi = max(r["ci_high"] for r in rows)
    margin = max((hi - lo) * 0.05, 1.0)
    lo, hi = lo - margin, hi + margin
    span = WIDTH - PAD_L - PAD_R

    def x(v: float) -> float:
        return round(PAD_L + (v - lo) / (hi - lo) * span, 1)

    height = PAD_T + ROW_H * len(rows) + PAD_B
    return {
        "width": WIDTH,
        "height": height,
        "axis_y": height - PAD_B,
        "rows": [
            {
                "label": r["model"],
                "y": PAD_T + ROW_H * k + ROW_H / 2,
                "x": x(r["rating"]),
                "x_lo": x(r["ci_low"]),
                "x_hi": x(r["ci_high"]),
                "rating": r["rating"],
            }
            for k, r in enumerate(rows)
        ],
        "ticks": [{"x": x(t), "label": f"{t:g}"} for t in _ticks(lo, hi) if lo <= t <= hi],
        "pad_l": PAD_L,
    }


def history(entries: list[dict[str, Any]], target: list[dict[str, Any]], min_margin: float = 10.0) -> dict[str, Any]:
    """Round-over-round lines: the target's newest version, and each model that keeps its name across rounds.
    ``min_margin``: the least room above and below the values (in their unit)."""
    series: dict[str, list[tuple[int, float]]] = {}
    if target:
        series["target (newest version)"] = [(t["iteration"], t["rating"]) for t in target]
    for e in entries:
        for name, rating in e["ratings"].items():
            if "@" not in name:
                series.setdefault(name, []).append((e["iteration"], rating))
    points = [p for s in series.values() for p in s]
    if not points:
        return {"width": WIDTH, "height": 0, "series": []}
    height = 240
    x_lo, x_hi = min(p[0] for p in points), max(p[0] for p in points)
    y_lo, y_hi = min(p[1] for p in points), max(p[1] for p in points)
    margin = max((y_hi - y_lo) * 0.1, min_margin)
    y_lo, y_hi = y_lo - margin, y_hi + margin
    x_span = max(x_hi - x_lo, 1)
    left, right, top, bottom = 60, WIDTH - 20, 10, height - 30

    def px(it: float) -> float:
        return round(left + (it - x_lo) / x_span * (right - left), 1) if x_hi > x_lo else (left + right) / 2

    def py(v: float) -> float:
        return round(bottom - (v - y_lo) / (y_hi - y_lo) * (bottom - top), 1)

    return {
        "width": WIDTH,
        "height": height,
        "left": left,
        "bottom": bottom,
        "series": [
            {
                "name": name,
                "color": PALETTE[k % len(PALETTE)],
                "width": 3 if k == 0 and target else 1.5,
                "points": " ".join(f"{px(i)},{py(v)}" for i, v in pts),
                "dots": [{"x": px(i), "y": py(v), "iteration": i, "rating": v} for i, v in pts],
            }
            for k, (name, pts) in enumerate(series.items())
        ],
        "x_ticks": [{"x": px(i), "label": str(i)} for i in sorted({p[0] for p in points})],
        "y_ticks": [{"y": py(t), "label": f"{t:g}"} for t in _ticks(y_lo, y_hi) if y_lo <= t <= y_hi],
    }


def progress(p: dict[str, Any]) -> dict[str, Any]:
    """The target's versions in stage order (x) against Elo (y), each with its interval; the competitors as
    horizontal bands (their interval, a dashed line at the rating, the name at the right); the versions the
    flywheel kept ringed, the one it keeps now labelled; a faint line between iterations."""
    versions, refs = p["versions"], p["references"]
    if not versions:
        return {"width": WIDTH, "height": 0, "points": []}
    left, label_w, top, height = 60, 130, 10, 300
    step_x = max(56, (WIDTH - left - label_w) // len(versions))  # a few versions fill the width; many widen it
    bottom = height - 40
    width = max(WIDTH, left + step_x * len(versions) + label_w)
    right = width - label_w
    values = [v for r in [*versions, *refs] for v in (r["ci_low"], r["ci_high"], r["rating"])]
    lo, hi = min(values), max(values)
    margin = max((hi - lo) * 0.06, 5.0)
    lo, hi = lo - margin, hi + margin

    def y(v: float) -> float:
        return round(bottom - (v - lo) / (hi - lo) * (bottom - top), 1)

    def x(k: int) -> float:
        return round(left + step_x * (k + 0.5), 1)

    points = []
    for k, v in enumerate(versions):
        points.append(
            {
                "model": v["model"],
                "tag": v["tag"],
                "x": x(k),
                "y": y(v["rating"]),
                "y_lo": y(v["ci_low"]),
                "y_hi": y(v["ci_high"]),
                "rating": v["rating"],
                "ci_low": v["ci_low"],
                "ci_high": v["ci_high"],
                "kept": bool(v["kept_after"]),
                "kept_after": v["kept_after"],
                "current": v["current"],
            }
        )
    # Between iterations (base counts as before iteration 0): where the iteration number changes.
    separators = [
        round((points[k - 1]["x"] + points[k]["x"]) / 2, 1)
        for k in range(1, len(versions))
        if versions[k]["iteration"] != versions[k - 1]["iteration"]
    ]
    bands = [
        {
            "model": r["model"],
            "y": y(r["rating"]),
            "y_top": y(r["ci_high"]),
            "h": round(y(r["ci_low"]) - y(r["ci_high"]), 1),
            "rating": r["rating"],
            "color": PALETTE[(k + 1) % len(PALETTE)],
        }
        for k, r in enumerate(refs)
    ]
    # Names at the right edge, at least a line apart (two competitors of about the same rating would overprint).
    last = -math.inf
    for b in sorted(bands, key=lambda b: b["y"]):
        b["label_y"] = round(max(b["y"] + 4, last + 13), 1)
        last = b["label_y"]
    return {
        "width": width,
        "height": height,
        "left": left,
        "right": right,
        "top": top,
        "bottom": bottom,
        "points": points,
        "line": " ".join(f"{pt['x']},{pt['y']}" for pt in points),
        "bands": bands,
        "separators": separators,
        "y_ticks": [{"y": y(t), "label": f"{t:g}"} for t in _ticks(lo, hi) if lo <= t <= hi],
    }


def canary(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """The judge's canary round over round: agreement, position flips and drift (shares, 0–1) per iteration."""
    names = {"agreement": "agreement", "position_flips": "position flips", "drift": "drift"}
    entries = []
    for rd in sorted(rounds, key=lambda r: r["iteration"]):
        c = rd.get("canary") or {}
        values = {label: c[k] for k, label in names.items() if c.get(k) is not None}
        if values:
            entries.append({"iteration": rd["iteration"], "ratings": values})
    return history(entries, [], min_margin=0.05)


def heat_color(value: float | None) -> str:
    """Red (0) through white (0.5) to blue (1); grey where the pair never met."""
    if value is None:
        return "#eeeeee"
    v = min(max(value, 0.0), 1.0)
    if v < 0.5:
        k = v / 0.5
        return f"rgb(214,{round(96 + 159 * k)},{round(77 + 178 * k)})"
    k = (v - 0.5) / 0.5
    return f"rgb({round(255 - 188 * k)},{round(255 - 108 * k)},{round(255 - 60 * k)})"
