"""Declarative benchmark protocols (``protocols/*.toml``): the schema, its validation and where protocols are found.

A protocol names its images (each with a sha256 and where to get it), the content/style pairs (optionally with
segmentation masks), resolutions, the style and evaluation sizes, metrics, seeds, default methods and per-method
parameter overrides. The format is documented in docs/protocols.md; ``protocols/quick.toml`` is the smallest
complete example.
"""

from __future__ import annotations

import hashlib
import re
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evalkit import plugins
from evalkit.assets import Asset
from evalkit.errors import ProtocolError
from evalkit.resolution import Resolution

REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class PairSpec:
    id: str
    content: str
    style: str
    content_mask: str | None = None
    style_mask: str | None = None


@dataclass
class Protocol:
    name: str
    description: str
    images: dict[str, Asset]
    pairs: list[PairSpec]
    resolutions: list[str]
    style_size: int = 512
    eval_size: int = 512
    metrics: list[str] = field(default_factory=list)
    seeds: int = 1
    methods: list[str] = field(default_factory=list)
    params: dict[str, dict[str, Any]] = field(default_factory=dict)
    sweep: dict[str, dict[str, list[Any]]] = field(default_factory=dict)  # method -> param -> values (a grid)
    timing: dict[str, Any] = field(default_factory=dict)
    # [executor.NAME] option tables (executor name -> options), shape-checked here; each executor checks its own
    executor_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    min_image_side: int = 32  # smaller images are an error naming the file (a 1x1 image is not a benchmark)
    source: str = ""
    sha256: str = ""
    text: str = ""  # the TOML as loaded: stored with every run, so reports never reload the protocol by name

    def pair(self, pair_id: str) -> PairSpec:
        for pair in self.pairs:
            if pair.id == pair_id:
                return pair
        raise ProtocolError(f"protocol '{self.name}' has no pair '{pair_id}'")


def protocol_dirs() -> list[Path]:
    """Where protocols are looked up by name: ./protocols, the source tree, then the installed share folder."""
    dirs = [Path.cwd() / "protocols", REPO_ROOT / "protocols", Path(sys.prefix) / "share" / "evalkit" / "protocols"]
    seen, out = set(), []
    for d in dirs:
        if d.is_dir() and d.resolve() not in seen:
            seen.add(d.resolve())
            out.append(d)
    return out


def list_protocols() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for d in reversed(protocol_dirs()):
        for f in sorted(d.glob("*.toml")):
            found[f.stem] = f
    return dict(sorted(found.items()))


def find_protocol(name_or_path: str) -> Path:
    path = Path(name_or_path)
    if path.suffix == ".toml" and path.is_file():
        return path
    known = list_protocols()
    if name_or_path in known:
        return known[name_or_path]
    raise ProtocolError(
        f"unknown protocol '{name_or_path}': known protocols are {', '.join(known) or 'none'}; or pass a path to a "
        f".toml file"
    )


def load_protocol(name_or_path: str) -> Protocol:
    path = find_protocol(name_or_path)
    raw_bytes = path.read_bytes()
    try:
        text = raw_bytes.decode()
        raw = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"protocol {path} is not valid TOML ({exc}): fix the syntax") from exc
    return parse_protocol(raw, source=str(path), sha256=hashlib.sha256(raw_bytes).hexdigest(), text=text)


def protocol_from_text(text: str, source: str, sha256: str | None = None) -> Protocol:
    """A protocol from its stored TOML text (as a run recorded it), checked against the stored sha256."""
    digest = hashlib.sha256(text.encode()).hexdigest()
    if sha256 and digest != sha256:
        raise ProtocolError(
            f"the protocol text stored for {source} has sha256 {digest[:12]}…, not the recorded "
            f"{sha256[:12]}…: the results database is damaged; rerun the benchmark"
        )
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ProtocolError(f"the protocol text stored for {source} is not valid TOML ({exc})") from exc
    return parse_protocol(raw, source=source, sha256=digest, text=text)


TOP_LEVEL = (
    "name",
    "description",
    "images",
    "pairs",
    "resolutions",
    "style_size",
    "eval_size",
    "metrics",
    "seeds",
    "methods",
    "params",
    "sweep",
    "timing",
    "executor",
    "min_image_side",
)
IMAGE_FIELDS = ("sha256", "mirror", "url", "package", "resource")
PAIR_FIELDS = ("id", "content", "style", "content_mask", "style_mask")
TIMING_FIELDS = ("executor", "warmup", "repeats")
EXECUTOR_NAME = re.compile(r"[A-Za-z0-9_]+")  # executor and option names in [executor.NAME] tables
SIZE_RANGE = (16, 16384)
DEFAULT_MIN_IMAGE_SIDE = 32


class _Fields:
    """Typed access to one table of a protocol, raising one line that names the file, the field and the fix."""

    def __init__(self, table: Any, where: str, prefix: str = "") -> None:
        self.where, self.prefix = where, prefix
        if not isinstance(table, dict):
            raise self.error("", f"must be a table, got {type(table).__name__}")
        self.table = table

    def error(self, key: str, problem: str) -> ProtocolError:
        name = f"{self.prefix}{key}" if key else self.prefix.rstrip(".") or "(top level)"
        return ProtocolError(f"{self.where}: field '{name}' {problem}: fix it in the protocol file")

    def only(self, allowed: tuple[str, ...]) -> None:
        unknown = [k for k in self.table if k not in allowed]
        if unknown:
            raise self.error(unknown[0], f"is not a protocol field (known: {', '.join(allowed)})")

    def string(self, key: str, default: str | None = None, required: bool = False) -> str | None:
        if key not in self.table:
            if required:
                raise self.error(key, "is required")
            return default
        value = self.table[key]
        if not isinstance(value, str) or not value.strip():
            raise self.error(key, f"must be a non-empty string, got {value!r}")
        return value

    def integer(self, key: str, default: int, low: int, high: int | None = None) -> int:
        value = self.table.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
            bounds = f"from {low} to {high}" if high is not None else f"of at least {low}"
            raise self.error(key, f"must be an integer {bounds}, got {value!r}")
        return value

    def strings(self, key: str, default: list[str]) -> list[str]:
        value = self.table.get(key, default)
        if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
            raise self.error(key, f"must be a list of strings, got {value!r}")
        return list(value)


def _images(raw: Any, where: str, name: str) -> dict[str, Asset]:
    images: dict[str, Asset] = {}
    for image_id, spec in _Fields(raw, where, "images.").table.items():
        f = _Fields(spec, where, f"images.{image_id}.")
        f.only(IMAGE_FIELDS)
        sha = f.string("sha256")
        if sha is None:
            raise f.error("sha256", f"is missing (image '{image_id}' has no sha256): every file must be pinned")
        if not re.fullmatch(r"[0-9a-f]{64}", sha):
            raise f.error("sha256", f"must be 64 lowercase hex digits, got {sha!r}")
        if not any(k in spec for k in ("mirror", "url", "package")):
            raise f.error("", "says nowhere to get it (give mirror, url or package)")
        mirror = f.string("mirror")
        if mirror is not None and (Path(mirror).is_absolute() or ".." in Path(mirror).parts or "\\" in mirror):
            raise f.error("mirror", f"must be a relative path inside the data mirror, got {mirror!r}")
        url = f.string("url")
        if url is not None and not re.match(r"https?://", url):
            raise f.error("url", f"must be an http(s) address, got {url!r}")
        package, resource = f.string("package"), f.string("resource")
        if (package is None) != (resource is None):
            raise f.error(
                "resource" if package else "package",
                "must be given together with " + ("package" if package is not None else "resource"),
            )
        images[image_id] = Asset(
            name=f.string("mirror") or f"{name}/{image_id}",
            sha256=sha,
            kind="data",
            url=url,
            package=package,
            resource=resource,
        )
    return images


PAIR_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")  # no path separators, no leading dot: ids name output files


def _pairs(raw: Any, where: str, images: dict[str, Asset]) -> list[PairSpec]:
    if not isinstance(raw, list):
        raise ProtocolError(
            f"{where}: field 'pairs' must be an array of tables ([[pairs]]): fix it in the protocol file"
        )
    pairs = []
    for i, item in enumerate(raw):
        f = _Fields(item, where, f"pairs[{i}].")
        f.only(PAIR_FIELDS)
        pair_id = str(f.string("id", required=True))
        if not PAIR_ID.fullmatch(pair_id):
            raise f.error(
                "id", f"must be letters, digits, '.', '_', '+' or '-' (it names output files), got {pair_id!r}"
            )
        pair = PairSpec(
            id=pair_id,
            content=str(f.string("content", required=True)),
            style=str(f.string("style", required=True)),
            content_mask=f.string("content_mask"),
            style_mask=f.string("style_mask"),
        )
        for key in ("content", "style", "content_mask", "style_mask"):
            ref = getattr(pair, key)
            if ref is not None and ref not in images:
                raise f.error(key, f"refers to unknown image '{ref}' (pair '{pair.id}')")
        pairs.append(pair)
    ids = [p.id for p in pairs]
    duplicate = next((i for i in ids if ids.count(i) > 1), None)
    if duplicate:
        raise ProtocolError(f"{where}: field 'pairs' has duplicate id '{duplicate}': give every pair its own id")
    return pairs


def _timing(raw: Any, where: str) -> dict[str, Any]:
    f = _Fields(raw, where, "timing.")
    f.only(TIMING_FIELDS)
    executor = f.string("executor", "local")
    executors = plugins.names(plugins.EXECUTORS)
    if executor not in executors:
        raise f.error("executor", f"must be one of {', '.join(executors)}, got {executor!r}")
    out: dict[str, Any] = dict(f.table)
    if "warmup" in out:
        out["warmup"] = f.integer("warmup", 0, 0)
    if "repeats" in out:
        out["repeats"] = f.integer("repeats", 1, 1)
    return out


def _name(top: _Fields, source: str) -> str:
    name = top.string("name") or Path(source).stem
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise top.error("name", f"must be letters, digits, '.', '_' or '-', got {name!r}")
    return name


def _resolutions(top: _Fields) -> list[str]:
    value = top.table.get("resolutions", ["512"])
    resolutions = [str(r) for r in value] if isinstance(value, list) else None
    if not resolutions:
        raise top.error(
            "resolutions", f'must be a non-empty list such as ["512", "1k"], got {top.table.get("resolutions")!r}'
        )
    for res in resolutions:
        try:
            Resolution.parse(res)
        except ValueError as exc:
            raise top.error("resolutions", str(exc)) from exc
    return resolutions


def _metrics(top: _Fields) -> list[str]:
    metrics = top.strings("metrics", ["content_loss", "style_loss"])
    known_metrics = plugins.names(plugins.METRICS)
    unknown = [m for m in metrics if m not in known_metrics]
    if unknown:
        raise top.error("metrics", f"names unknown metric '{unknown[0]}' (known: {', '.join(known_metrics)})")
    return metrics


def _params(top: _Fields) -> dict[str, dict[str, Any]]:
    params = top.table.get("params") or {}
    if not isinstance(params, dict) or not all(isinstance(v, dict) for v in params.values()):
        raise top.error("params", "must hold one table per method, e.g. [params.gatys] iterations = 100")
    return {k: dict(v) for k, v in params.items()}


def _is_value_lists(table: Any) -> bool:
    return isinstance(table, dict) and all(isinstance(v, list) and v for v in table.values())


def _sweep(top: _Fields) -> dict[str, dict[str, list[Any]]]:
    sweep = top.table.get("sweep") or {}
    if not isinstance(sweep, dict) or not all(_is_value_lists(table) for table in sweep.values()):
        raise top.error(
            "sweep", "must hold one table per method of non-empty value lists, e.g. [sweep.adain] alpha = [0.5, 1.0]"
        )
    return {k: {p: list(vals) for p, vals in v.items()} for k, v in sweep.items()}


def _executor_options(raw: Any, where: str) -> dict[str, dict[str, Any]]:
    """``[executor.NAME]`` tables: only their shape is checked here; each executor checks its own options."""
    tables = _Fields(raw, where, "executor.")
    out: dict[str, dict[str, Any]] = {}
    for name, table in tables.table.items():
        if not EXECUTOR_NAME.fullmatch(name):
            raise tables.error("", f"names executor {name!r}: executor names are letters, digits and '_' only")
        options = _Fields(table, where, f"executor.{name}.")
        for key, value in options.table.items():
            if not EXECUTOR_NAME.fullmatch(key):
                raise options.error("", f"has option {key!r}: option names are letters, digits and '_' only")
            if not isinstance(value, str | int | float):  # bool is an int
                raise options.error(key, f"must be a string, number or boolean, got {value!r}")
        out[name] = dict(options.table)
    return out


def parse_protocol(raw: dict[str, Any], source: str = "<dict>", sha256: str = "", text: str = "") -> Protocol:
    """Validate every field (one line naming the file, the field and the fix) and build the :class:`Protocol`."""
    where = f"protocol {source}"
    top = _Fields(raw, where)
    top.only(TOP_LEVEL)
    name = _name(top, source)
    images = _images(raw.get("images") or {}, where, name)
    pairs = _pairs(raw.get("pairs") or [], where, images)
    resolutions = _resolutions(top)
    metrics = _metrics(top)
    params = _params(top)
    sweep = _sweep(top)
    protocol = Protocol(
        name=name,
        description=top.string("description", "") or "",
        images=images,
        pairs=pairs,
        resolutions=resolutions,
        style_size=top.integer("style_size", 512, *SIZE_RANGE),
        eval_size=top.integer("eval_size", 512, *SIZE_RANGE),
        metrics=metrics,
        seeds=top.integer("seeds", 1, 1, 1000),
        methods=top.strings("methods", []),
        params=params,
        sweep=sweep,
        timing=_timing(raw.get("timing") or {}, where),
        executor_options=_executor_options(raw.get("executor") or {}, where),
        min_image_side=top.integer("min_image_side", DEFAULT_MIN_IMAGE_SIDE, 1, 16384),
        source=source,
        sha256=sha256,
        text=text,
    )
    if not pairs:  # after every field's own check, so a malformed field is named first
        raise ProtocolError(
            f"{where}: has no [[pairs]]: add at least one table with id, content and style (see protocols/quick.toml)"
        )
    return protocol
