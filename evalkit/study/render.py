"""Jinja2 rendering of the study pages, with autoescaping always on (participant-supplied text is never trusted)."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape


@lru_cache(maxsize=1)
def environment() -> Environment:
    return Environment(
        loader=PackageLoader("evalkit", "templates/study"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


# Page texts a study may override (``--texts``); a page rendered without them shows the built-in wording.
TEXT_DEFAULTS: dict[str, Any] = {
    "page_title": "Image comparison study",
    "contact": None,
    "information": None,
    "instructions": None,
    "consent_text": None,
    "thank_you": None,
    "tie_token": None,
    "allow_tie": False,
    "fmt": "ab",
    "n_options": 2,
    "minutes": 1,
}


def render(name: str, **context: Any) -> str:
    return environment().get_template(name).render(**{**TEXT_DEFAULTS, **context})
