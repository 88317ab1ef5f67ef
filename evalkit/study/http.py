"""Strict request parsing for the study server: every field is validated before any state changes.

Integers are ASCII digits only (``str.isdigit`` accepts ``²`` and ``١``, which ``int`` then rejects or reads as 1),
with a bounded length; tokens and Prolific values are ASCII identifiers; a malformed field is a :class:`BadRequest`
with a 4xx status and a one-line reason, never a 5xx.
"""

from __future__ import annotations

import json
import re
from typing import Any

from starlette.requests import Request

ASCII_INT = re.compile(r"[0-9]+", re.ASCII)
TOKEN_VALUE = re.compile(r"[A-Za-z0-9_-]{1,64}", re.ASCII)
PROLIFIC_VALUE = re.compile(r"[A-Za-z0-9_-]{1,64}", re.ASCII)
PROLIFIC_PARAMS = {"PROLIFIC_PID": "prolific_pid", "STUDY_ID": "study_id", "SESSION_ID": "session_id"}
MAX_BODY = 4096


class BadRequest(Exception):
    """A request the server refuses; ``status`` is the 4xx to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def ascii_int(text: Any, field: str, max_digits: int = 6, required: bool = True) -> int | None:
    """``text`` as a non-negative integer written in ASCII digits; :class:`BadRequest` naming ``field`` otherwise."""
    if text is None or text == "":
        if required:
            raise BadRequest(400, f"{field} is missing: send a non-negative integer")
        return None
    if not isinstance(text, str) or len(text) > max_digits or not ASCII_INT.fullmatch(text):
        raise BadRequest(400, f"{field} must be a non-negative integer of at most {max_digits} ASCII digits")
    return int(text)


def token(text: Any, field: str) -> str:
    if not isinstance(text, str) or not TOKEN_VALUE.fullmatch(text):
        raise BadRequest(400, f"{field} is missing or malformed")
    return text


def body_length(request: Request, limit: int) -> int:
    length = ascii_int(request.headers.get("content-length"), "Content-Length", max_digits=12, required=False)
    if length is None:
        raise BadRequest(411, "request body missing: send Content-Length")
    if length > limit:
        raise BadRequest(413, f"request body too large (limit {limit} bytes)")
    return length


async def read_json(request: Request, limit: int) -> Any:
    body_length(request, limit)
    raw = await request.body()
    if len(raw) > limit:
        raise BadRequest(413, f"request body too large (limit {limit} bytes)")
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadRequest(400, "body is not valid JSON") from exc


async def read_form(request: Request, limit: int = MAX_BODY) -> dict[str, str]:
    """A flat form (urlencoded or a JSON object of strings and integers) as ``str -> str``."""
    ctype = request.headers.get("content-type", "")
    if ctype.startswith("application/json"):
        data = await read_json(request, limit)
        if not isinstance(data, dict) or not all(
            isinstance(v, str) or (isinstance(v, int) and not isinstance(v, bool)) for v in data.values()
        ):
            raise BadRequest(400, "body must be a flat JSON object of strings and integers")
        return {str(k): str(v) for k, v in data.items()}
    body_length(request, limit)
    if not ctype.startswith("application/x-www-form-urlencoded"):
        raise BadRequest(415, "send application/x-www-form-urlencoded or application/json")
    try:
        form = await request.form()
    except Exception as exc:  # noqa: BLE001 - a body the form parser rejects is the client's error
        raise BadRequest(400, f"malformed form body ({type(exc).__name__})") from exc
    return {k: v for k, v in form.items() if isinstance(v, str)}


def prolific_params(source: Any) -> dict[str, str | None]:
    """``PROLIFIC_PID`` / ``STUDY_ID`` / ``SESSION_ID`` from a query or form (absent -> ``None``)."""
    out: dict[str, str | None] = {}
    for param, column in PROLIFIC_PARAMS.items():
        value = source.get(param)
        if value in (None, ""):
            out[column] = None
        elif not isinstance(value, str) or not PROLIFIC_VALUE.fullmatch(value):
            raise BadRequest(400, f"{param} must be 1-64 letters, digits, '-' or '_'")
        else:
            out[column] = value
    return out


def security_headers(nonce: str | None = None) -> dict[str, str]:
    script = f"'nonce-{nonce}'" if nonce else "'none'"
    return {
        "Content-Security-Policy": f"default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'; "
        f"script-src {script}; form-action 'self'; frame-ancestors 'none'",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-store",
    }
