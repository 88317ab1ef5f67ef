"""The copy step of ``evalkit study build``: every stimulus re-encoded under a random name, and the items shown.

Images are copied as plain RGB PNGs (no text chunks or EXIF that could name the method) under 32 random hex digits,
so neither a file name nor a URL tells which method made an image. Items are the comparisons of the study: for each
pair every two methods (``ab``) or all of them (``nway``), in a seeded random option order, then the vigilance
(catch) items that show the unstylized photo among real stylizations.
"""

from __future__ import annotations

import itertools
import random
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image

from evalkit.errors import EvalkitError
from evalkit.study import MAX_OPTIONS
from evalkit.study.config import Candidate, References
from evalkit.study.design import Item

if TYPE_CHECKING:
    from evalkit.assets import AssetStore
    from evalkit.protocol import Protocol

REFERENCE_MAX_SIDE = 512
CATCH_MIN_DIFFERENCE = 10.0  # grey levels (0-255), mean absolute difference from the photo
CONTENT = "__content__"  # the key of a pair's unstylized photo among its candidates (by_pair)


def save_png(src: Path, dst: Path, size: tuple[int, int] | None = None, max_side: int | None = None) -> tuple[int, int]:
    """Re-encode as plain RGB PNG: strips text chunks/EXIF that could name the method that made the image."""
    try:
        with Image.open(src) as opened:
            im = opened.convert("RGB")
            if size is not None and im.size != size:
                im = im.resize(size, Image.Resampling.LANCZOS)
            elif max_side is not None and max(im.size) > max_side:
                scale = max_side / max(im.size)
                im = im.resize(
                    (max(1, round(im.width * scale)), max(1, round(im.height * scale))), Image.Resampling.LANCZOS
                )
            im.save(dst, "PNG")
            return im.size
    except OSError as exc:
        raise EvalkitError(f"cannot read image {src} ({exc}): rerun the job or remove it from the run") from exc


def difference(folder: Path, a: str, b: str) -> float:
    """Mean absolute difference in grey levels between two stimuli (inf if their sizes differ)."""
    import numpy as np

    with Image.open(folder / f"{a}.png") as ia, Image.open(folder / f"{b}.png") as ib:
        if ia.size != ib.size:
            return float("inf")
        return float(np.abs(np.asarray(ia, dtype=np.float32) - np.asarray(ib, dtype=np.float32)).mean())


@dataclass
class Stimuli:
    """What the copy step made: candidates by id, each pair's references, and ``pair -> label -> candidate id``
    (with :data:`CONTENT` for the pair's unstylized photo when the question has catch trials)."""

    folder: Path
    candidates: dict[str, Candidate] = field(default_factory=dict)
    references: dict[str, References] = field(default_factory=dict)
    by_pair: dict[str, dict[str, str]] = field(default_factory=dict)
    _used: set[str] = field(default_factory=set)

    def new_name(self) -> str:
        while True:
            name = secrets.token_hex(16)
            if name not in self._used:
                self._used.add(name)
                return name

    def add(self, pair_id: str, key: str, candidate: Candidate) -> None:
        cid = f"c{len(self.candidates):04d}"
        self.candidates[cid] = candidate
        self.by_pair.setdefault(pair_id, {})[key] = cid

    def image_of(self, cid: str) -> str:
        return self.candidates[cid].image


def copy_stimuli(
    results: Path,
    outputs: dict[tuple[str, str], dict[str, Any]],
    labels: list[str],
    pairs: list[str],
    protocol: Protocol,
    assets: AssetStore,
    question: str,
    folder: Path,
) -> Stimuli:
    """Copy each pair's outputs (one per label), its content and style references and, for the questions with catch
    trials, its content photo at the outputs' size into ``folder`` under random names."""
    stimuli = Stimuli(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for pair_id in pairs:
        out_size = (0, 0)
        stimuli.by_pair[pair_id] = {}
        for lab in labels:
            job = outputs[(lab, pair_id)]
            name = stimuli.new_name()
            out_size = save_png(results / job["output_path"], folder / f"{name}.png")
            stimuli.add(pair_id, lab, Candidate(lab, job["job_key"], pair_id, "output", name))
        pair = protocol.pair(pair_id)
        refs = {}
        for role, image_id in (("content", pair.content), ("style", pair.style)):
            name = stimuli.new_name()
            save_png(
                assets.fetch(protocol.images[image_id], progress=False),
                folder / f"{name}.png",
                max_side=REFERENCE_MAX_SIDE,
            )
            refs[role] = name
        stimuli.references[pair_id] = References(content=refs["content"], style=refs["style"])
        if question in ("style", "photoreal"):  # vigilance: the unstylized photo among real stylizations
            name = stimuli.new_name()
            save_png(assets.fetch(protocol.images[pair.content], progress=False), folder / f"{name}.png", size=out_size)
            stimuli.add(pair_id, CONTENT, Candidate(None, None, pair_id, "content", name))
    return stimuli


def design_items(
    stimuli: Stimuli, labels: list[str], pairs: list[str], fmt: str, question: str, rng: random.Random
) -> tuple[list[Item], int]:
    """The study's items (regular ones first, in ``pairs`` order, then vigilance) and how many are vigilance."""
    items: list[Item] = []

    def next_id() -> str:
        return f"i{len(items) + 1:04d}"

    for pair_id in pairs:
        cids = [stimuli.by_pair[pair_id][lab] for lab in labels]
        groups = [list(c) for c in itertools.combinations(cids, 2)] if fmt == "ab" else [cids]
        for group in groups:
            rng.shuffle(group)
            items.append(Item(id=next_id(), pair_id=pair_id, cands=tuple(group)))
    vigilance = 0
    for k, pair_id in enumerate(pairs):
        if CONTENT not in stimuli.by_pair[pair_id]:
            break
        content = stimuli.by_pair[pair_id][CONTENT]
        # only a clearly stylized output can be the catch's foil: an identity baseline or a barely-optimised one
        # looks like the photo, and a catch whose answer is ambiguous would exclude honest participants
        outs = [
            stimuli.by_pair[pair_id][lab]
            for lab in labels
            if difference(stimuli.folder, stimuli.image_of(content), stimuli.image_of(stimuli.by_pair[pair_id][lab]))
            >= CATCH_MIN_DIFFERENCE
        ]
        if not outs:
            continue
        shown = [outs[k % len(outs)]] if fmt == "ab" else outs[: MAX_OPTIONS - 1]
        group = [content, *shown]
        rng.shuffle(group)
        correct = tuple(shown) if question == "style" else (content,)
        items.append(Item(id=next_id(), pair_id=pair_id, cands=tuple(group), kind="vigilance", correct=correct))
        vigilance += 1
    return items, vigilance
