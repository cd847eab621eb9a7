"""Line charts as inline SVG, drawn by jobtrack itself: no chart library, no script, no font to fetch (#16).

Lines differ by dash pattern and legend text as well as colour, so they can be told apart without
colour; long series are thinned to at most ``MAX_POINTS`` per line (each bucket keeps its lowest and
highest point, so spikes stay visible).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape
from typing import Any

MAX_POINTS = 1000
"""Points drawn per line at most; a 10 k epoch run is thinned to this (min and max of each bucket kept)."""

COLOURS = ("#1f5fbf", "#c2410c", "#15803d", "#7e22ce", "#a16207", "#be123c", "#0e7490", "#4d4d4d")
DASHES = ("", "7 4", "2 3", "10 3 2 3", "4 4", "1 2")

_W, _PLOT_H = 560, 190
_LEFT, _RIGHT, _BOTTOM = 58, 12, 40
_PER_ROW = 3  # legend entries per row, above the plot


@dataclass(frozen=True)
class Line:
    """One series: its legend text and its (x, y) points in x order."""

    label: str
    points: Sequence[tuple[float, float]]


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def metric_lines(epochs: Sequence[dict[str, Any]]) -> dict[str, dict[str, list[tuple[float, float]]]]:
    """``{metric: {"train": points, "validation": points}}`` from a job's epochs (non-numbers skipped).

    One plain loop (a 10 k epoch job is drawn on every page load; it measured faster than comprehensions
    per metric). ``type()`` rather than ``isinstance``: bools are ints, and a flag is no curve.
    """
    out: dict[str, dict[str, list[tuple[float, float]]]] = {}
    numbers = (int, float)
    finite = math.isfinite
    for ep in epochs:
        x = ep.get("epoch")
        if not isinstance(x, numbers) or isinstance(x, bool) or not finite(x):
            continue
        for split in ("train", "validation"):
            part = ep.get(split)
            if not part:
                continue
            for name, value in part.items():
                if type(value) in numbers and finite(value):
                    line = out.get(name)
                    if line is None:
                        line = out[name] = {}
                    points = line.get(split)
                    if points is None:
                        points = line[split] = []
                    points.append((float(x), float(value)))
    return out


def thin(points: Sequence[tuple[float, float]], limit: int = MAX_POINTS) -> list[tuple[float, float]]:
    """At most about ``limit`` points: each bucket's lowest and highest (in x order), plus the last point."""
    if len(points) <= limit:
        return list(points)
    size = math.ceil(len(points) / (limit // 2))
    ys = [p[1] for p in points]
    out: list[tuple[float, float]] = []
    for i in range(0, len(points), size):
        seg = ys[i:i + size]
        lo, hi = i + seg.index(min(seg)), i + seg.index(max(seg))
        out.append(points[min(lo, hi)])
        if lo != hi:
            out.append(points[max(lo, hi)])
    if out[-1] != points[-1]:
        out.append(points[-1])
    return out


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values covering ``lo``..``hi`` (steps of 1, 2 or 5 times a power of ten)."""
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / max(1, count)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    # ticks by index, not by adding ``step`` to a running value: a step below the values' float resolution
    # (0.07 against 0.06999999999999999) left that value unchanged and the loop never ended
    first, last = math.ceil(lo / step), math.floor(hi / step + 1e-9)
    return [round(k * step, 12) for k in range(first, min(last, first + 4 * count) + 1)]


def _fmt(value: float) -> str:
    return f"{value:.4g}" if abs(value) < 1e5 else f"{value:.3g}"


def chart(title: str, lines: Sequence[Line], *, best: tuple[float, float] | None = None,
          x_label: str = "epoch", chart_id: str = "") -> str:
    """One chart as an ``<svg>`` element (escaped text; scales to its container's width)."""
    drawn = [(line, thin(line.points)) for line in lines if line.points]
    xs = [p[0] for _, pts in drawn for p in pts]
    ys = [p[1] for _, pts in drawn for p in pts]
    total = sum(len(line.points) for line in lines)
    title_e = escape(title)
    longest = max((min(len(line.label), 24) for line, _ in drawn), default=1)
    per_row = max(1, min(_PER_ROW, int((_W - _LEFT - _RIGHT) // (34 + 6.4 * longest))))
    top = 30 + 14 * math.ceil(len(drawn) / per_row)
    height = top + _PLOT_H + _BOTTOM
    head = (f'<svg class="chart" viewBox="0 0 {_W} {height}" role="img" aria-label="{title_e}" '
            f'data-points="{total}"' + (f' id="{escape(chart_id)}"' if chart_id else "") + ">"
            f"<title>{title_e}</title>"
            f'<text class="ctitle" x="{_LEFT}" y="16">{title_e}</text>')
    if not xs:
        note = f'<text class="note" x="{_W / 2}" y="{height / 2:.0f}" text-anchor="middle">no values yet</text>'
        return head + note + "</svg>"
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), max(ys)
    if x1 == x0:
        x0, x1 = x0 - 1, x1 + 1
    span = y1 - y0
    if span <= max(abs(y0), abs(y1)) * 1e-9:  # equal up to float rounding: drawn as a flat line, not as noise
        span = 0.0
    pad = span * 0.06 or abs(y0) * 0.1 or 1.0
    y0, y1 = y0 - pad, y1 + pad
    pw, ph = _W - _LEFT - _RIGHT, height - top - _BOTTOM

    def sx(x: float) -> float:
        return _LEFT + (x - x0) / (x1 - x0) * pw

    def sy(y: float) -> float:
        return top + ph - (y - y0) / (y1 - y0) * ph

    parts = [head, f'<rect class="plot" x="{_LEFT}" y="{top}" width="{pw}" height="{ph}"/>']
    for t in nice_ticks(y0, y1):
        if y0 <= t <= y1:
            parts.append(f'<line class="grid" x1="{_LEFT}" x2="{_LEFT + pw}" y1="{sy(t):.1f}" y2="{sy(t):.1f}"/>'
                         f'<text class="tick" x="{_LEFT - 6}" y="{sy(t) + 4:.1f}" text-anchor="end">{_fmt(t)}</text>')
    for t in nice_ticks(x0, x1, 6):
        if x0 <= t <= x1 and float(t).is_integer():
            parts.append(f'<text class="tick" x="{sx(t):.1f}" y="{top + ph + 15}" text-anchor="middle">'
                         f"{int(t)}</text>")
    parts.append(f'<text class="tick" x="{_LEFT + pw / 2}" y="{height - 6}" text-anchor="middle">'
                 f"{escape(x_label)}</text>")
    if best is not None and x0 <= best[0] <= x1:
        bx = sx(best[0])
        parts.append(f'<g class="best"><line x1="{bx:.1f}" x2="{bx:.1f}" y1="{top}" y2="{top + ph}"/>'
                     f'<circle cx="{bx:.1f}" cy="{sy(best[1]):.1f}" r="5"/>'
                     f'<text x="{min(bx + 4, _LEFT + pw - 90):.1f}" y="{top + 12}">best epoch {_fmt(best[0])}</text>'
                     "</g>")
    for i, (line, pts) in enumerate(drawn):
        colour, dash = COLOURS[i % len(COLOURS)], DASHES[i % len(DASHES)]
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        coords = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in pts)
        parts.append(f'<polyline class="series" fill="none" stroke="{colour}"{dash_attr} '
                     f'data-points="{len(line.points)}" points="{coords}"><title>{escape(line.label)}</title>'
                     "</polyline>")
        if len(pts) == 1:
            parts.append(f'<circle cx="{sx(pts[0][0]):.1f}" cy="{sy(pts[0][1]):.1f}" r="3" fill="{colour}"/>')
        label = escape(line.label if len(line.label) <= 24 else line.label[:23] + "\u2026")
        lx = _LEFT + (i % per_row) * (pw / per_row)
        ly = 36 + 14 * (i // per_row)
        parts.append(f'<g class="legend"><line x1="{lx:.1f}" x2="{lx + 22:.1f}" y1="{ly - 4}" y2="{ly - 4}" '
                     f'stroke="{colour}"{dash_attr}/><text x="{lx + 26:.1f}" y="{ly}">{label}</text></g>')
    parts.append("</svg>")
    return "".join(parts)


def job_charts(epochs: Sequence[dict[str, Any]], *, eval_metric: str | None = None,
               best_epoch: Any = None) -> list[str]:
    """One chart per metric of a job (train and validation lines), the best epoch marked on each."""
    out = []
    lines = metric_lines(epochs)
    names = sorted(lines, key=lambda n: (n != eval_metric, n))
    for name in names:
        splits = lines[name]
        best = None
        if _finite(best_epoch):
            split = "validation" if "validation" in splits else "train"
            hit = [p for p in splits[split] if p[0] == float(best_epoch)]
            if hit:
                best = hit[0]
        series = [Line(split, splits[split]) for split in ("train", "validation") if split in splits]
        out.append(chart(name, series, best=best, chart_id=f"chart-{name}"))
    return out


def short_label(label: str, keep: int = 14) -> str:
    """A long label (a job id) by its end, where ids of one database differ (their starts share the time)."""
    return label if len(label) <= keep + 2 else "\u2026" + label[-keep:]


def overlay_charts(runs: Sequence[tuple[str, Sequence[dict[str, Any]]]]) -> list[str]:
    """Per metric and split, one chart with a line for each run: ``runs`` are (label, epochs) pairs."""
    per: dict[tuple[str, str], list[Line]] = {}
    for label, epochs in runs:
        for name, splits in metric_lines(epochs).items():
            for split, points in splits.items():
                per.setdefault((split, name), []).append(Line(short_label(label), points))
    order = sorted(per, key=lambda k: (k[0] != "validation", k[1]))
    return [chart(f"{split} {name}", per[(split, name)], chart_id=f"cmp-{split}-{name}") for split, name in order]
