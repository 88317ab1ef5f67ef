"""The researcher's own texts for a study (``evalkit study build --texts FILE``): an ethics board approves its own
information and consent wording, so every real study needs its own.

The file is TOML; every field is optional and falls back to evalkit's built-in text:

    title        = "Which painting style fits best?"       # page title and heading (plain text)
    information  = '''Markdown: who you are, what the study is about, ...'''
    consent      = '''Markdown: what is recorded, how it is used, that taking part is voluntary ...'''
    instructions = '''Markdown: how to answer (default: format-specific keys, number of screens, duration)'''
    question     = "Which image is the better painting?"    # overrides the built-in style/favorite/photoreal wording
    thank_you    = '''Markdown shown with the completion code'''
    contact      = "Questions? Write to study@example.org"  # Markdown, shown on every page's foot

Markdown is rendered with markdown-it (CommonMark) with **raw HTML disabled**: ``<script>`` in a text is shown as
text, never run; links are allowed (only http, https and mailto targets). The rendered HTML is stored in
``study.json`` with the source, so a study serves exactly what was built.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from markupsafe import Markup

from evalkit.errors import EvalkitError

FIELDS = ("title", "information", "consent", "instructions", "question", "thank_you", "contact")
PLAIN = ("title", "question")  # shown as plain text (autoescaped), never as Markdown
MAX_CHARS = 20_000
SAFE_SCHEMES = ("http://", "https://", "mailto:")


def _markdown() -> Any:
    from markdown_it import MarkdownIt

    md = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False})
    setattr(md, "validateLink", lambda url: url.strip().lower().startswith(SAFE_SCHEMES))  # noqa: B010 - no javascript:, data:, file:
    return md


def render_markdown(text: str) -> str:
    """Safe HTML for a researcher's Markdown (raw HTML escaped, only http(s)/mailto links), links opening new tabs."""
    html = _markdown().render(text)
    return html.replace("<a href=", '<a rel="noopener noreferrer" target="_blank" href=')


def load_texts(path: Path) -> dict[str, str]:
    """The file's fields, validated: a one-line error names the file, the field and the fix."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise EvalkitError(
            f"--texts {path}: file not found; write a TOML file with title, consent, ... fields"
        ) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise EvalkitError(f"--texts {path} is not valid TOML ({exc}): fix the syntax") from None
    unknown = [k for k in raw if k not in FIELDS]
    if unknown:
        raise EvalkitError(f"--texts {path}: unknown field '{unknown[0]}': the fields are {', '.join(FIELDS)}")
    for key, value in raw.items():
        if not isinstance(value, str) or not value.strip():
            raise EvalkitError(f"--texts {path}: field '{key}' must be a non-empty string")
        if len(value) > MAX_CHARS:
            raise EvalkitError(f"--texts {path}: field '{key}' is longer than {MAX_CHARS} characters")
    return {k: v.strip() for k, v in raw.items()}


def prepare(texts: dict[str, str]) -> dict[str, str]:
    """What the study stores: plain fields as given, Markdown fields as their safe HTML (``<field>_html``)."""
    out: dict[str, str] = {}
    for key, value in texts.items():
        out[key] = value
        if key not in PLAIN:
            out[f"{key}_html"] = render_markdown(value)
    return out


def html(texts: dict[str, str], key: str) -> Markup | None:
    """A stored Markdown field's HTML, marked safe for the templates (it was rendered with raw HTML disabled)."""
    value = texts.get(f"{key}_html")
    return Markup(value) if value else None  # noqa: S704 - rendered by markdown-it with html=False
