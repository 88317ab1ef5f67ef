"""A study's private configuration, ``study.json``: one typed, versioned :class:`StudyConfig`.

``evalkit study build`` writes it (readable by its owner only: it holds the answer key, the admin token and the key
of the completion codes); every other command only reads it with :func:`load_study`. A file written by an older
evalkit is migrated *in memory* (:func:`migrate`): reading never rewrites the file, so serving, exporting or analysing
an old study leaves its ``study.json`` byte for byte as it was. The one exception is its mode: a world-readable
file is made private (0600) when read, since it holds secrets; that changes neither its bytes nor its mtime.

Versions (``schema_version``):

1. the untyped dictionary written before this field existed (no ``schema_version`` key). The oldest files lack
   ``code_secret`` and the researcher settings added since (texts, ties, speed check, Prolific codes, caps); all of
   them lack ``study_id``, ``run_ids`` and ``legacy_key``.
2. adds ``study_id`` (random, unique: what the study's rows in a results database are keyed by), ``run_ids`` (every
   run the study was built from; ``run_id`` is gone) and ``legacy_key``.

Migrating version 1 derives what it lacks from the study's own secrets, so that every read of one file gives the same
answer: its ``study_id`` is ``legacy-`` and a hash of its admin token (stable, unique, reveals nothing), its
``code_secret`` (when it has none) an HMAC of the admin token, its ``run_ids`` the one run it was built from, and its
``legacy_key`` its name: the key its results had in a results database before study ids existed, which the next
``evalkit study analyze`` replaces.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evalkit.errors import EvalkitError
from evalkit.study.codes import write_private
from evalkit.study.design import Item

STUDY_FILE = "study.json"
STATIC_DIR = "static"
IMAGES_DIR = "images"
SCHEMA_VERSION = 2


def new_study_id() -> str:
    """48 random bits, hex: unique among the studies of any one results root."""
    return secrets.token_hex(6)


@dataclass(frozen=True)
class Candidate:
    """One stimulus: a method's output for a pair, or (``kind == "content"``) the unstylized photo of a catch trial."""

    label: str | None  # the method label (None for the content photo)
    job_key: str | None  # the job that made it (None for the content photo)
    pair_id: str
    kind: str  # output | content
    image: str  # the random file name (without .png) under static/images

    def to_json(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "job_key": self.job_key,
            "pair_id": self.pair_id,
            "kind": self.kind,
            "image": self.image,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Candidate:
        return cls(data["label"], data["job_key"], data["pair_id"], data["kind"], data["image"])


@dataclass(frozen=True)
class References:
    """The random image names of a pair's content photo and style image."""

    content: str
    style: str


@dataclass
class StudyConfig:
    """Everything a study was built with; the fields after ``show_content`` are private and never served."""

    study_id: str
    name: str  # the study folder's name: how reports label the study
    created: str
    question: str  # style | favorite | photoreal
    prompt: str  # the question as shown
    format: str  # ab | nway
    trials_per_participant: int
    vigilance: int
    repeats: int
    show_style: bool
    show_content: bool
    seed: int
    admin_token: str
    code_secret: str  # key of the per-participant completion codes (evalkit.study.codes)
    results: str  # the results root the study was built from
    protocol: str
    run_ids: list[str]  # the runs the study was built from, oldest first
    resolution: str
    methods: list[str]
    pairs: list[str]
    candidates: dict[str, Candidate]
    references: dict[str, References]
    items: list[Item]
    texts: dict[str, str] = field(default_factory=dict)  # the researcher's texts (--texts); {}: built-in wording
    allow_tie: bool = False  # a "no preference" answer (counts as half a win each)
    min_response_ms: int = 0  # a median response time below this flags a participant as too fast (0: off)
    seconds_per_screen: int = 6  # an estimate for the duration the consent page states
    completion_code: str | None = None  # Prolific's own study code, for the return link
    screened_code: str | None = None  # Prolific's code for screened-out participants
    screen_out_after: int | None = None  # vigilance failures tolerated before the screened-out code
    max_participants: int | None = None
    static_tokens: dict[str, str] = field(default_factory=dict)  # static export: option token -> candidate id
    submit_url: str | None = None  # where the static export posts answers (None: /static-submit refuses them)
    legacy_key: str | None = None  # migrated from version 1: the key its results had before study ids
    schema_version: int = SCHEMA_VERSION

    @property
    def run_id(self) -> str:
        """The newest run the study was built from."""
        return self.run_ids[-1]

    @property
    def total_trials(self) -> int:
        """Screens each participant answers."""
        return self.trials_per_participant + self.vigilance + self.repeats

    def to_json(self) -> dict[str, Any]:
        """The ``study.json`` object (public settings first, the answer key and secrets after them)."""
        return {
            "schema_version": self.schema_version,
            "study_id": self.study_id,
            "name": self.name,
            "created": self.created,
            "question": self.question,
            "prompt": self.prompt,
            "texts": self.texts,
            "allow_tie": self.allow_tie,
            "min_response_ms": self.min_response_ms,
            "seconds_per_screen": self.seconds_per_screen,
            "format": self.format,
            "trials_per_participant": self.trials_per_participant,
            "vigilance": self.vigilance,
            "repeats": self.repeats,
            "show_style": self.show_style,
            "show_content": self.show_content,
            # ---- private from here on: never served ----
            "seed": self.seed,
            "admin_token": self.admin_token,
            "code_secret": self.code_secret,
            "completion_code": self.completion_code,
            "screened_code": self.screened_code,
            "screen_out_after": self.screen_out_after,
            "max_participants": self.max_participants,
            "results": self.results,
            "protocol": self.protocol,
            "run_ids": list(self.run_ids),
            "legacy_key": self.legacy_key,
            "resolution": self.resolution,
            "methods": list(self.methods),
            "pairs": list(self.pairs),
            "candidates": {cid: c.to_json() for cid, c in self.candidates.items()},
            "references": {p: {"content": r.content, "style": r.style} for p, r in self.references.items()},
            "items": [it.to_dict() for it in self.items],
            "static_tokens": self.static_tokens,
            "submit_url": self.submit_url,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StudyConfig:
        """A configuration from a ``study.json`` object of any version (older ones migrated in memory)."""
        data = migrate(data)
        return cls(
            study_id=str(data["study_id"]),
            name=str(data["name"]),
            created=str(data["created"]),
            question=data["question"],
            prompt=data["prompt"],
            format=data["format"],
            trials_per_participant=int(data["trials_per_participant"]),
            vigilance=int(data["vigilance"]),
            repeats=int(data["repeats"]),
            show_style=bool(data["show_style"]),
            show_content=bool(data["show_content"]),
            seed=int(data["seed"]),
            admin_token=data["admin_token"],
            code_secret=data["code_secret"],
            results=data["results"],
            protocol=data["protocol"],
            run_ids=list(data["run_ids"]),
            resolution=data["resolution"],
            methods=list(data["methods"]),
            pairs=list(data["pairs"]),
            candidates={cid: Candidate.from_json(c) for cid, c in data["candidates"].items()},
            references={p: References(r["content"], r["style"]) for p, r in data["references"].items()},
            items=[Item.from_dict(d) for d in data["items"]],
            texts=dict(data.get("texts") or {}),
            allow_tie=bool(data.get("allow_tie")),
            min_response_ms=int(data.get("min_response_ms") or 0),
            seconds_per_screen=int(data.get("seconds_per_screen") or 6),
            completion_code=data.get("completion_code"),
            screened_code=data.get("screened_code"),
            screen_out_after=data.get("screen_out_after"),
            max_participants=data.get("max_participants"),
            static_tokens=dict(data.get("static_tokens") or {}),
            submit_url=data.get("submit_url"),
            legacy_key=data.get("legacy_key"),
            schema_version=SCHEMA_VERSION,
        )


def _derived(admin_token: str, purpose: str) -> str:
    return hmac.new(str(admin_token).encode(), f"evalkit-study:{purpose}".encode(), hashlib.sha256).hexdigest()


def _migrate_1(data: dict[str, Any]) -> dict[str, Any]:
    """Version 1 (untyped, before study ids) -> 2; see the module docstring."""
    out = dict(data)
    token = out["admin_token"]
    out.setdefault("code_secret", _derived(token, "code-secret"))
    out["study_id"] = "legacy-" + _derived(token, "study-id")[:12]
    out["run_ids"] = [out.pop("run_id")]
    out["legacy_key"] = out["name"]
    out["schema_version"] = 2
    return out


MIGRATIONS = {1: _migrate_1}


def migrate(data: dict[str, Any]) -> dict[str, Any]:
    """A ``study.json`` object brought to :data:`SCHEMA_VERSION` (a new object; ``data`` is not changed)."""
    version = int(data.get("schema_version", 1))
    if version > SCHEMA_VERSION:
        raise EvalkitError(
            f"this study was built by a newer evalkit (study.json schema {version}, this one reads up to "
            f"{SCHEMA_VERSION}): upgrade evalkit to use it"
        )
    while version < SCHEMA_VERSION:
        data = MIGRATIONS[version](data)
        version += 1
    return data


def load_study(folder: Path) -> StudyConfig:
    """Read a study folder's configuration (never rewriting it), with a one-line error if it is not a study."""
    path = Path(folder) / STUDY_FILE
    if not path.is_file():
        raise EvalkitError(f"{folder} is not a study folder (no {STUDY_FILE}): build one with `evalkit study build`")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise EvalkitError(f"{path} is not valid JSON ({exc}): rebuild the study") from exc
    if not isinstance(data, dict):
        raise EvalkitError(f"{path} is not a study configuration (not a JSON object): rebuild the study")
    try:
        config = StudyConfig.from_json(data)
    except KeyError as exc:
        raise EvalkitError(f"{path} lacks the field {exc}: rebuild the study") from exc
    except (TypeError, ValueError, AttributeError) as exc:
        raise EvalkitError(f"{path} has a malformed field ({exc}): rebuild the study") from exc
    if path.stat().st_mode & 0o077:
        path.chmod(0o600)  # an older build left the answer key and admin token readable by everyone
    return config


def write_study(folder: Path, config: StudyConfig) -> None:
    """Write ``study.json`` (0600): only ``evalkit study build`` does."""
    write_private(Path(folder) / STUDY_FILE, json.dumps(config.to_json(), indent=1))
