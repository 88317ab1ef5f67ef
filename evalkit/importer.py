"""``evalkit import``: outputs made elsewhere become a method's rows for a protocol, scored like any other.

A folder's files are matched to the protocol's pairs by a pattern (``{content}``, ``{style}``, ``{pair}``
placeholders) or a CSV map (``pair_id,file``). Each matched file is checked with the protocol images' rules (readable,
an image, no odd mode) and against its content image's aspect ratio, then planned as a job whose key comes from the
pair and the file's sha256: re-importing an unchanged folder reuses every job, a changed file makes a new job that
replaces the old one, and a pair without a file is recorded ``missing``. The jobs then run through the ordinary
runner (the worker reads each file instead of running a method), so metrics, set-level reductions, resume,
leaderboards, ``compare``, exports and studies treat them like any other row; the speed table says "not timed
(imported)".
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path

from evalkit import imaging
from evalkit.assets import AssetStore, sha256_file
from evalkit.errors import EvalkitError
from evalkit.planner import Plan, PlannedMethod, image_digests
from evalkit.protocol import PairSpec, Protocol
from evalkit.registry import available_methods
from evalkit.resolution import Resolution
from evalkit.specs import JobSpec

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
PLACEHOLDERS = ("content", "style", "pair")
IMPORTED_VERSION = "imported"
_NAME = re.compile(r"[A-Za-z0-9_.\-]+")


class ImportRefused(EvalkitError):
    """Files of the folder were refused: nothing is recorded (``errors`` has one line per file)."""

    def __init__(self, errors: list[str]) -> None:
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        super().__init__(f"{len(errors)} file(s) refused, nothing recorded: {errors[0]}{more}")
        self.errors = errors


@dataclass
class ImportPlan:
    """What a folder gives: the plan (one job per pair), the files the worker reads, and what to tell the user."""

    plan: Plan
    files: dict[str, str] = field(default_factory=dict)  # sha256 -> path
    missing: list[str] = field(default_factory=list)  # pair ids without a file
    unmatched: list[str] = field(default_factory=list)  # files no pair names
    errors: list[str] = field(default_factory=list)  # one line per bad file (those pairs are not recorded)


def _check_name(name: str) -> None:
    if not _NAME.fullmatch(name):
        raise EvalkitError(f"--as '{name}' must be letters, digits, '.', '_' or '-': name the imported method so")
    if name in available_methods():
        raise EvalkitError(f"--as '{name}' is an installed method: give the imported outputs a name of their own")


def match_pattern(folder: Path, pattern: str, pairs: list[PairSpec]) -> dict[str, Path]:
    """``pair id -> path`` named by ``pattern``; one-line errors for unknown placeholders and two pairs that name the
    same file."""
    names = {m.group(1) for m in re.finditer(r"{([^{}]*)}", pattern)}
    unknown = sorted(names - set(PLACEHOLDERS))
    if unknown or not names:
        raise EvalkitError(
            f"--pattern '{pattern}' uses {{{unknown[0]}}}: use {{content}}, {{style}} and {{pair}}"
            if unknown
            else f"--pattern '{pattern}' has no placeholder: write e.g. '{{content}}_stylized_{{style}}.png'"
        )
    out: dict[str, Path] = {}
    seen: dict[str, str] = {}
    for pair in pairs:
        relative = pattern.format(content=pair.content, style=pair.style, pair=pair.id)
        if relative in seen:
            raise EvalkitError(
                f"--pattern '{pattern}' names the same file {relative} for pairs '{seen[relative]}' and '{pair.id}': "
                f"add {{style}} or {{pair}} to the pattern"
            )
        seen[relative] = pair.id
        out[pair.id] = folder / relative
    return out


def match_map(folder: Path, map_file: Path, pairs: list[PairSpec]) -> tuple[dict[str, Path], list[str]]:
    """``pair id -> path`` from a CSV with columns ``pair_id,file`` (paths relative to the folder), and warnings for
    rows naming unknown pairs."""
    try:
        with open(map_file, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise EvalkitError(f"cannot read --map {map_file} ({exc}): give a CSV with columns pair_id,file") from None
    if not rows or not {"pair_id", "file"} <= set(rows[0]):
        raise EvalkitError(f"--map {map_file} needs a header with columns pair_id,file")
    known = {p.id for p in pairs}
    out: dict[str, Path] = {}
    warnings = []
    for number, row in enumerate(rows, start=2):
        pair_id, name = (row.get("pair_id") or "").strip(), (row.get("file") or "").strip()
        if pair_id not in known:
            warnings.append(f"{map_file}:{number}: pair '{pair_id}' is not in the protocol (row ignored)")
            continue
        if pair_id in out:
            raise EvalkitError(f"{map_file}:{number}: pair '{pair_id}' is mapped twice: keep one row per pair")
        out[pair_id] = folder / name
    return out, warnings


def _unmatched(folder: Path, named: set[Path]) -> list[str]:
    files = [p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    resolved = {p.resolve() for p in named}
    return sorted(str(p.relative_to(folder)) for p in files if p.resolve() not in resolved)


def _job(protocol: Protocol, name: str, pair: PairSpec, resolution: str, source: str) -> JobSpec:
    return JobSpec(
        method=name,
        weight_set=None,
        params={},
        pair_id=pair.id,
        resolution=resolution,
        seed=0,
        content=pair.content,
        style=pair.style,
        content_mask=None,
        style_mask=None,
        style_size=protocol.style_size,
        eval_size=protocol.eval_size,
        method_version=IMPORTED_VERSION,
        weight_digests={},
        image_digests=image_digests(protocol, pair),
        source=source,
    ).with_key()


def _check_file(path: Path, pair: PairSpec, protocol: Protocol, resolution: Resolution, assets: AssetStore) -> str:
    """The file's sha256 after the protocol images' checks and the aspect-ratio check against its content image."""
    image = imaging.load_image(path)
    imaging.check_min_side(image, path, protocol.min_image_side)
    content = imaging.load_image(assets.fetch(protocol.images[pair.content]))
    target = resolution.target_size(content.size)
    if not imaging.aspect_matches(image.size, target):
        raise EvalkitError(
            f"{path} is {image.size[0]}x{image.size[1]} but content '{pair.content}' is {target[0]}x{target[1]} at "
            f"{resolution.name}: the aspect ratios differ; export the output at the content's aspect ratio"
        )
    return sha256_file(path)


def plan_import(
    folder: Path,
    protocol: Protocol,
    name: str,
    assets: AssetStore,
    pattern: str | None = None,
    map_file: Path | None = None,
    resolution: str | None = None,
) -> ImportPlan:
    """Match, check and plan a folder of outputs (nothing is written)."""
    _check_name(name)
    if not folder.is_dir():
        raise EvalkitError(f"{folder} is not a folder: give the folder holding the outputs")
    if (pattern is None) == (map_file is None):
        raise EvalkitError("say how files match pairs: --pattern '{content}_stylized_{style}.png' or --map FILE.csv")
    res = Resolution.parse(resolution or protocol.resolutions[0])
    warnings: list[str] = []
    if pattern is not None:
        paths = match_pattern(folder, pattern, protocol.pairs)
    else:
        assert map_file is not None
        paths, warnings = match_map(folder, map_file, protocol.pairs)
    method = PlannedMethod(cls=None, weight_set=None, digests={}, name=name)
    out = ImportPlan(Plan(methods={name: method}, notes=warnings, replaces=name))
    for pair in protocol.pairs:
        path = paths.get(pair.id)
        if path is None or not path.is_file():
            out.missing.append(pair.id)
            out.plan.jobs.append(_job(protocol, name, pair, res.name, "missing"))
            continue
        try:
            sha = _check_file(path, pair, protocol, res, assets)
        except EvalkitError as exc:
            out.errors.append(str(exc))
            continue
        out.files[sha] = str(path.resolve())
        out.plan.jobs.append(_job(protocol, name, pair, res.name, sha))
    out.unmatched = _unmatched(folder, {p for p in paths.values()})
    return out
