"""Declarative benchmark protocols (``protocols/*.toml``) and the frozen job specs planned from them.

A protocol names its images (each with a sha256 and where to get it), the content/style pairs (optionally with
segmentation masks), resolutions, the style and evaluation sizes, metrics, seeds, default methods and per-method
parameter overrides. The format is documented in docs/protocols.md; ``protocols/quick.toml`` is the smallest
complete example.
"""

from __future__ import annotations

import hashlib
import json
import sys
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from evalkit.assets import Asset
from evalkit.errors import ProtocolError
from evalkit.imaging import Resolution

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
    timing: dict[str, Any] = field(default_factory=dict)
    source: str = ""
    sha256: str = ""

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
        raw = tomllib.loads(raw_bytes.decode())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"protocol {path} is not valid TOML ({exc}): fix the syntax") from exc
    return parse_protocol(raw, source=str(path), sha256=hashlib.sha256(raw_bytes).hexdigest())


def parse_protocol(raw: dict[str, Any], source: str = "<dict>", sha256: str = "") -> Protocol:
    where = f"protocol {source}"
    name = raw.get("name") or Path(source).stem
    images: dict[str, Asset] = {}
    for image_id, spec in (raw.get("images") or {}).items():
        if "sha256" not in spec:
            raise ProtocolError(f"{where}: image '{image_id}' has no sha256: every file must be pinned")
        if not any(k in spec for k in ("mirror", "url", "package")):
            raise ProtocolError(f"{where}: image '{image_id}' says nowhere to get it (mirror, url or package)")
        images[image_id] = Asset(
            name=spec.get("mirror") or f"{name}/{image_id}",
            sha256=spec["sha256"],
            kind="data",
            url=spec.get("url"),
            package=spec.get("package"),
            resource=spec.get("resource"),
        )
    pairs = []
    for i, item in enumerate(raw.get("pairs") or []):
        try:
            pair = PairSpec(
                id=str(item["id"]), content=item["content"], style=item["style"],
                content_mask=item.get("content_mask"), style_mask=item.get("style_mask"),
            )
        except KeyError as exc:
            raise ProtocolError(f"{where}: pair #{i} lacks {exc}") from exc
        for ref in (pair.content, pair.style, pair.content_mask, pair.style_mask):
            if ref is not None and ref not in images:
                raise ProtocolError(f"{where}: pair '{pair.id}' refers to unknown image '{ref}'")
        pairs.append(pair)
    if len({p.id for p in pairs}) != len(pairs):
        raise ProtocolError(f"{where}: duplicate pair ids")
    resolutions = [str(r) for r in raw.get("resolutions", ["512"])]
    for res in resolutions:
        try:
            Resolution.parse(res)
        except ValueError as exc:
            raise ProtocolError(f"{where}: {exc}") from exc
    return Protocol(
        name=name,
        description=raw.get("description", ""),
        images=images,
        pairs=pairs,
        resolutions=resolutions,
        style_size=int(raw.get("style_size", 512)),
        eval_size=int(raw.get("eval_size", 512)),
        metrics=list(raw.get("metrics", ["content_loss", "style_loss"])),
        seeds=int(raw.get("seeds", 1)),
        methods=list(raw.get("methods", [])),
        params={k: dict(v) for k, v in (raw.get("params") or {}).items()},
        timing=dict(raw.get("timing") or {}),
        source=source,
        sha256=sha256,
    )


@dataclass(frozen=True)
class JobSpec:
    """One unit of work, frozen and serialisable (it travels to worker processes and Ray tasks).

    ``key`` is a content hash of everything that determines the output: method version, weight set and its
    sha256s, parameters, image sha256s, resolution, style size and seed.
    """

    method: str
    weight_set: str | None
    params: dict[str, Any]
    pair_id: str
    resolution: str
    seed: int
    content: str
    style: str
    content_mask: str | None
    style_mask: str | None
    style_size: int
    eval_size: int
    method_version: str
    weight_digests: dict[str, str | None]
    image_digests: dict[str, str | None]
    key: str = ""

    @property
    def label(self) -> str:
        from evalkit.weights import weight_label

        return weight_label(self.method, self.weight_set)

    def identity(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("key")
        data.pop("eval_size")  # metrics are keyed separately; changing eval size must not re-stylize
        return data

    def with_key(self) -> JobSpec:
        blob = json.dumps(self.identity(), sort_keys=True, separators=(",", ":"), default=str)
        return JobSpec(**{**asdict(self), "key": hashlib.sha256(blob.encode()).hexdigest()[:32]})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobSpec:
        return cls(**data)
