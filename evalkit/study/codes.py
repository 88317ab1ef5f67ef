"""Per-participant completion codes and the other secrets a study keeps in ``study.json``.

A completion code is an HMAC of the participant's session id with the study's secret, so it is unguessable (60 bits)
and tied to one session: a researcher who matches the codes of Prolific submissions against the admin CSV (or
``evalkit study export-prolific``) can tell a real completion from a shared or invented one. Codes are issued in the
same transaction that stores the last answer, never before. A participant screened out by the catch trials (when the
study was built with ``--screen-out``) gets a code of the ``screened`` kind instead, which the researcher can map to
Prolific's "screened out" completion path.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from pathlib import Path

KINDS = ("complete", "screened")


def new_secret() -> str:
    """256 random bits, hex: the key of every completion code of one study."""
    return secrets.token_hex(32)


def completion_code(secret: str, pid: str, kind: str = "complete") -> str:
    """``XXXX-XXXX-XXXX`` (base32, 60 bits) = HMAC-SHA256(secret, kind:pid), truncated."""
    if kind not in KINDS:
        raise ValueError(f"unknown completion code kind '{kind}': use one of {', '.join(KINDS)}")
    mac = hmac.new(secret.encode(), f"{kind}:{pid}".encode(), hashlib.sha256).digest()
    text = base64.b32encode(mac[:10]).decode()[:12]
    return f"{text[:4]}-{text[4:8]}-{text[8:12]}"


def admin_session(admin_token: str) -> str:
    """The value of the admin cookie: derived from the token, so the token itself never has to be stored in it."""
    return hmac.new(admin_token.encode(), b"evalkit-admin-session", hashlib.sha256).hexdigest()


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by its owner only (0600), whatever the umask: it holds secrets."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fd = -1
            fh.write(text)
    finally:
        if fd >= 0:
            os.close(fd)
