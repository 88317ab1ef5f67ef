"""The leaderboard's plots as files for papers: standalone SVG (the same drawing as the page, through the same
Jinja macro and autoescaping) and PNG (matplotlib, when installed, from the plot's data units)."""

from __future__ import annotations

import re
from pathlib import Path

from jinja2 import Environment

from evalkit.report.plots import Plot

SVG_NS = 'xmlns="http://www.w3.org/2000/svg"'


def slug(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", title.lower()).strip("_") or "plot"


def write_svg(plot: Plot, path: Path, env: Environment) -> Path:
    macro = env.get_template("_plot.html.j2").module.svg_plot  # type: ignore[attr-defined]  # a template macro
    html = str(macro(plot, slug(plot.title)))
    svg = html[html.index("<svg") : html.index("</svg>") + len("</svg>")]
    svg = svg.replace("<svg ", f'<svg {SVG_NS} font-family="sans-serif" font-size="11" ', 1)
    path.write_text('<?xml version="1.0" encoding="UTF-8"?>\n' + svg + "\n", encoding="utf-8")
    return path


def write_png(plot: Plot, path: Path) -> Path | None:
    """A 150-dpi PNG of ``plot``; ``None`` when matplotlib is not installed (the SVG is always written)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=150)
    for s in plot.series:
        pts = plot.raw.get(s.name, [])
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        ax.plot(xs, ys, "-o" if plot.lines and len(pts) > 1 else "o", color=s.color, label=s.name, markersize=5)
    if plot.raw_frontier:
        ax.plot(*zip(*plot.raw_frontier, strict=True), "--", color="#222", linewidth=1.2, label="Pareto frontier")
    ax.set_xscale("log" if plot.log_x else "linear")
    ax.set_yscale("log" if plot.log_y else "linear")
    ax.set_xlabel(plot.xlabel)
    ax.set_ylabel(plot.ylabel)
    ax.set_title(plot.title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def write_figures(plots: list[Plot], folder: Path, env: Environment) -> list[Path]:
    """``<folder>/<slug>.svg`` and ``.png`` for each plot; returns the paths written."""
    folder.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for plot in plots:
        written.append(write_svg(plot, folder / f"{slug(plot.title)}.svg", env))
        png = write_png(plot, folder / f"{slug(plot.title)}.png")
        if png is not None:
            written.append(png)
    return written
