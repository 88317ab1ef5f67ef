"""Plot geometry for inline SVG: axes (linear or log), ticks and mapped points, computed here and drawn by the
``_plots.html.j2`` template, so every label passes through Jinja's autoescaping and no plotting library is needed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#bcbd22"]
WIDTH, HEIGHT = 560, 340
MARGIN = {"left": 78, "right": 150, "top": 20, "bottom": 50}


def color_for(index: int) -> str:
    return PALETTE[index % len(PALETTE)]


@dataclass
class Axis:
    """Maps data values to pixels along one dimension; log scale when the data span more than two decades."""

    lo: float
    hi: float
    start: float
    end: float
    log: bool = False

    @classmethod
    def fit(cls, values: list[float], start: float, end: float, allow_log: bool = True) -> Axis:
        vals = [v for v in values if v is not None and math.isfinite(v)]
        if not vals:
            vals = [0.0, 1.0]
        lo, hi = min(vals), max(vals)
        log = allow_log and lo > 0 and hi / lo > 100
        if log:
            lo, hi = 10 ** math.floor(math.log10(lo)), 10 ** math.ceil(math.log10(hi))
        else:
            pad = (hi - lo) * 0.08 or (abs(hi) * 0.1 or 1.0)
            lo, hi = lo - pad, hi + pad
            if min(vals) >= 0 and lo < 0:
                lo = 0.0
        return cls(lo, hi, start, end, log)

    def __call__(self, value: float) -> float:
        if self.log:
            frac = (math.log10(value) - math.log10(self.lo)) / (math.log10(self.hi) - math.log10(self.lo))
        else:
            frac = (value - self.lo) / (self.hi - self.lo)
        return round(self.start + frac * (self.end - self.start), 2)

    def ticks(self) -> list[tuple[float, str]]:
        if self.log:
            exps = range(int(round(math.log10(self.lo))), int(round(math.log10(self.hi))) + 1)
            return [(self(10.0**e), tick_label(10.0**e)) for e in exps]
        step = nice_step((self.hi - self.lo) / 5)
        first = math.ceil(self.lo / step) * step
        out, value = [], first
        while value <= self.hi + step * 1e-9:
            out.append((self(value), tick_label(value if abs(value) > step * 1e-6 else 0.0)))
            value += step
        return out


def tick_label(value: float) -> str:
    """Shortest exact label: ``0.013``, ``4e+10``, ``1.5e+11``."""
    return f"{value:.6g}"


def nice_step(raw: float) -> float:
    """1, 2 or 5 times a power of ten: tick spacings a reader can add up."""
    if raw <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(raw))
    for mult in (1, 2, 5, 10):
        if raw <= mult * power:
            return mult * power
    return 10 * power


@dataclass
class Series:
    name: str
    color: str
    points: list[tuple[float, float, str]] = field(default_factory=list)  # (x px, y px, hover text)

    @property
    def path(self) -> str:
        return " ".join(f"{x},{y}" for x, y, _ in self.points)


@dataclass
class Plot:
    """Everything the SVG template needs; ``lines`` False draws a scatter plot."""

    title: str
    xlabel: str
    ylabel: str
    series: list[Series]
    xticks: list[tuple[float, str]]
    yticks: list[tuple[float, str]]
    lines: bool
    note: str = ""
    frontier: list[tuple[float, float]] = field(default_factory=list)  # Pareto frontier (x px, y px), drawn dashed
    raw: dict[str, list[tuple[float, float]]] = field(default_factory=dict)  # data units, for figure files
    raw_frontier: list[tuple[float, float]] = field(default_factory=list)
    log_x: bool = False
    log_y: bool = False
    width: int = WIDTH
    height: int = HEIGHT
    left: int = MARGIN["left"]
    right: int = WIDTH - MARGIN["right"]
    top: int = MARGIN["top"]
    bottom: int = HEIGHT - MARGIN["bottom"]


def make_plot(
    title: str,
    xlabel: str,
    ylabel: str,
    data: dict[str, list[tuple[float, float, str]]],
    colors: dict[str, str],
    lines: bool,
    note: str = "",
    frontier: list[tuple[float, float]] | None = None,
    sort_x: bool = True,
) -> Plot | None:
    """``data``: series name -> [(x, y, hover text)] in data units. ``None`` when there is nothing to draw.
    ``frontier`` (data units) is drawn as a dashed line; ``sort_x`` False keeps each series' own point order."""
    data = {k: [p for p in v if p[0] is not None and p[1] is not None] for k, v in data.items()}
    data = {k: (sorted(v) if sort_x else v) for k, v in data.items() if v}
    if not data:
        return None
    xs = [p[0] for v in data.values() for p in v]
    ys = [p[1] for v in data.values() for p in v]
    x = Axis.fit(xs, MARGIN["left"], WIDTH - MARGIN["right"])
    y = Axis.fit(ys, HEIGHT - MARGIN["bottom"], MARGIN["top"])
    series = [
        Series(name, colors.get(name, color_for(i)), [(x(px), y(py), text) for px, py, text in pts])
        for i, (name, pts) in enumerate(data.items())
    ]
    scales = [f"{axis} log scale" for axis, a in (("x", x), ("y", y)) if a.log]
    note = "; ".join(filter(None, [note, ", ".join(scales)]))
    front = sorted(frontier or [])
    return Plot(
        title,
        xlabel,
        ylabel,
        series,
        x.ticks(),
        y.ticks(),
        lines,
        note,
        frontier=[(x(px), y(py)) for px, py in front],
        raw={k: [(px, py) for px, py, _ in v] for k, v in data.items()},
        raw_frontier=front,
        log_x=x.log,
        log_y=y.log,
    )


def pareto_front(points: list[tuple[float, float]], x_higher: bool, y_higher: bool) -> list[tuple[float, float]]:
    """The points no other point dominates (at least as good on both axes and better on one), given each axis'
    direction (``True``: higher is better)."""

    def better_or_equal(a: float, b: float, higher: bool) -> bool:
        return a >= b if higher else a <= b

    front = []
    for p in points:
        dominated = any(
            q != p
            and better_or_equal(q[0], p[0], x_higher)
            and better_or_equal(q[1], p[1], y_higher)
            and (q[0] != p[0] or q[1] != p[1])
            for q in points
        )
        if not dominated and p not in front:
            front.append(p)
    return sorted(front)
