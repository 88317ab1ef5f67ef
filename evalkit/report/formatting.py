"""Number formatting and escaping shared by the HTML, Markdown and LaTeX renderers."""

from __future__ import annotations

import math
import re


def fmt_num(value: float | None, digits: int = 3) -> str:
    """``digits`` significant figures; scientific notation outside [1e-3, 1e5) so columns stay narrow."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 1e5 or magnitude < 1e-3:
        return f"{value:.{digits - 1}e}"
    decimals = max(0, digits - 1 - int(math.floor(math.log10(magnitude))))
    return f"{value:.{decimals}f}"


def fmt_pm(mean: float | None, half: float | None) -> str:
    """``mean ± half`` with the half-width at the mean's precision (plain text)."""
    if mean is None:
        return "n/a"
    if half is None:
        return fmt_num(mean)
    return f"{fmt_num(mean)} ± {fmt_num(half, 2)}"


_LATEX_SPECIALS = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "<": r"\textless{}",
    ">": r"\textgreater{}",
    "|": r"\textbar{}",
}
_LATEX_RE = re.compile("|".join(re.escape(k) for k in _LATEX_SPECIALS))


def latex_escape(text: object) -> str:
    """Escape every LaTeX special character so a method name can never break (or inject into) a paper."""
    return _LATEX_RE.sub(lambda m: _LATEX_SPECIALS[m.group(0)], str(text))


def latex_num(text: str) -> str:
    """A formatted number for LaTeX: ``1.23e+05`` becomes ``$1.23\\times10^{5}$``; ± becomes ``$\\pm$``."""

    def sci(match: re.Match) -> str:
        return f"${match.group(1)}\\times10^{{{int(match.group(2))}}}$"

    text = re.sub(r"(-?\d+(?:\.\d+)?)e([+-]\d+)", sci, text)
    return text.replace("±", r"$\pm$").replace("–", "--")


_MD_SPECIALS = re.compile(r"([\\`*_\[\]|#<>])")


def md_escape(text: object) -> str:
    """Markdown cell text: HTML specials become entities and Markdown syntax characters are backslash-escaped."""
    text = str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _MD_SPECIALS.sub(r"\\\1", text).replace("\n", " ")


def markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    """Lines of a Markdown table from already-escaped cells: first column left-aligned, the others right-aligned."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join([":---"] + ["---:"] * (len(header) - 1)) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]
