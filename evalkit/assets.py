"""One resolver for every weight and data file evalkit uses.

Order: local cache (``$EVALKIT_HOME`` or ``~/.cache/evalkit``) -> mirror folder (``EVALKIT_WEIGHTS_MIRROR`` /
``EVALKIT_DATA_MIRROR`` or CLI options) -> a file an installed package ships -> download with a progress bar.
Every file is sha256-verified wherever it was found, so a mirror, a package upgrade or a flaky download can never
silently change a benchmark. Files whose upstream publishes no checksum are pinned on first download ("trust on
first use") in ``$EVALKIT_HOME/pins.json`` and the user is told the digest, to be pinned in the code.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import urllib.request
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Literal

from evalkit.errors import AssetError

Kind = Literal["weights", "data"]
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Asset:
    """A file evalkit needs, with every place it may come from.

    ``name`` is the file's path relative to the mirror/cache root of its kind (e.g. ``wct/1SE.pth``), so a mirror is
    simply a folder laid out like the cache.
    """

    name: str
    sha256: str | None
    kind: Kind = "weights"
    url: str | None = None
    package: str | None = None
    resource: str | None = None
    size: int | None = None
    sha256_prefix: str | None = None  # e.g. torchvision's 'vgg19-dcbb9e9d.pth' names its digest's first 8 hex
    manual: str | None = None  # where a person can get it when no direct download address exists (a share link)

    @property
    def short(self) -> str:
        return f"{self.kind} file '{self.name}'"


@dataclass
class AssetSettings:
    """Where to look; plain data so that worker processes (subprocess, Ray) can rebuild the same resolver."""

    home: str | None = None
    weights_mirror: str | None = None
    data_mirror: str | None = None
    allow_download: bool = True

    @classmethod
    def from_env(cls, **overrides: str | bool | None) -> AssetSettings:
        settings = cls(
            home=os.environ.get("EVALKIT_HOME"),
            weights_mirror=os.environ.get("EVALKIT_WEIGHTS_MIRROR"),
            data_mirror=os.environ.get("EVALKIT_DATA_MIRROR"),
            allow_download=os.environ.get("EVALKIT_OFFLINE", "") not in ("1", "true", "yes"),
        )
        for key, value in overrides.items():
            if value is not None:
                setattr(settings, key, value)
        return settings

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Located:
    """Where an asset was found (``source`` is cache|mirror|package|download)."""

    path: Path
    source: str


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class AssetStore:
    """Resolves :class:`Asset` objects to verified local paths.

    There is no process-wide instance: the CLI builds one from its options, a :class:`~evalkit.runner.RunRequest`
    carries its settings to planning, workers and metrics, so every part of a run resolves files the same way.
    """

    settings: AssetSettings = field(default_factory=AssetSettings.from_env)
    _verified: dict[tuple[str, int, int], str] = field(default_factory=dict, repr=False)

    @classmethod
    def from_env(cls, **overrides: str | bool | None) -> AssetStore:
        """A store configured from ``EVALKIT_*`` environment variables (the entry points' default)."""
        return cls(AssetSettings.from_env(**overrides))

    @property
    def home(self) -> Path:
        return Path(self.settings.home or Path.home() / ".cache" / "evalkit").expanduser()

    def mirror(self, kind: Kind) -> Path | None:
        root = self.settings.weights_mirror if kind == "weights" else self.settings.data_mirror
        return Path(root).expanduser() if root else None

    def cache_path(self, asset: Asset) -> Path:
        return self.home / asset.kind / asset.name

    # -- pins for files without a published checksum -------------------------------------------------------
    def _pins_file(self) -> Path:
        return self.home / "pins.json"

    def expected_sha256(self, asset: Asset) -> str | None:
        if asset.sha256:
            return asset.sha256
        pins = self._read_pins()
        return pins.get(f"{asset.kind}/{asset.name}")

    def _read_pins(self) -> dict[str, str]:
        try:
            return json.loads(self._pins_file().read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}

    def _record_pin(self, asset: Asset, digest: str) -> None:
        pins = self._read_pins()
        pins[f"{asset.kind}/{asset.name}"] = digest
        self._pins_file().parent.mkdir(parents=True, exist_ok=True)
        self._pins_file().write_text(json.dumps(pins, indent=2, sort_keys=True))

    # -- verification ----------------------------------------------------------------------------------------
    def digest(self, path: Path) -> str:
        """sha256 of a file, memoised on (path, size, mtime) so repeated runs do not re-hash big weights."""
        stat = path.stat()
        key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
        if key not in self._verified:
            self._verified[key] = sha256_file(path)
        return self._verified[key]

    def _check(self, asset: Asset, path: Path, where: str) -> None:
        expected = self.expected_sha256(asset)
        if expected is None and asset.sha256_prefix is None:
            return
        actual = self.digest(path)
        prefix_ok = asset.sha256_prefix is None or actual.startswith(asset.sha256_prefix)
        if (expected is not None and actual != expected) or not prefix_ok:
            expected = expected or f"{asset.sha256_prefix}"
            raise AssetError(
                f"{asset.short} at {path} ({where}) has sha256 {actual[:12]}…, expected {expected[:12]}…: "
                f"the file is corrupt or a different version; delete it and supply the original "
                f"({self._how_to_supply(asset)})"
            )

    # -- candidates ------------------------------------------------------------------------------------------
    def _package_path(self, asset: Asset) -> Path | None:
        if not asset.package or not asset.resource:
            return None
        try:
            ref = resources.files(asset.package).joinpath(asset.resource)
        except (ModuleNotFoundError, TypeError):
            return None
        try:
            with resources.as_file(ref) as real:
                return Path(real) if Path(real).is_file() else None
        except FileNotFoundError:
            return None

    def locate(self, asset: Asset) -> Located | None:
        """Find a verified local copy without touching the network; ``None`` when there is none.

        A copy that exists but fails verification raises :class:`AssetError`: a wrong file is never skipped over
        silently, because that would hide a broken mirror.
        """
        cached = self.cache_path(asset)
        if cached.is_file():
            self._check(asset, cached, "cache")
            return Located(cached, "cache")
        mirror = self.mirror(asset.kind)
        if mirror is not None and (mirror / asset.name).is_file():
            self._check(asset, mirror / asset.name, "mirror")
            return Located(mirror / asset.name, "mirror")
        packaged = self._package_path(asset)
        if packaged is not None:
            self._check(asset, packaged, f"package {asset.package}")
            return Located(packaged, "package")
        return None

    def fetch(self, asset: Asset, progress: bool = True) -> Path:
        """Return a verified local path, downloading into the cache when allowed and needed."""
        found = self.locate(asset)
        if found is not None:
            return found.path
        if self.download_blocker(asset) is None:
            return self._download(asset, progress)
        raise AssetError(self.not_found_message(asset))

    def download_blocker(self, asset: Asset) -> str | None:
        """Why ``asset`` cannot be downloaded now (``None`` when it can): the one rule every caller shares.

        A file hosted on the Hugging Face hub counts as not obtainable when ``HF_HUB_OFFLINE`` is set, the
        standard switch users and CI set when the hub cannot be reached.
        """
        if not asset.url:
            return "no download address is known"
        if not self.settings.allow_download:
            return "downloads are disabled (EVALKIT_OFFLINE)"
        if "huggingface.co" in asset.url and os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in (
            "1",
            "true",
            "yes",
            "on",
        ):
            return "HF_HUB_OFFLINE is set, so it cannot be downloaded from the Hugging Face hub"
        return None

    def _looked(self, asset: Asset) -> str:
        mirror = self.mirror(asset.kind)
        env = "EVALKIT_WEIGHTS_MIRROR" if asset.kind == "weights" else "EVALKIT_DATA_MIRROR"
        parts = [f"cache {self.cache_path(asset)}"]
        parts.append(f"mirror {mirror / asset.name}" if mirror else f"mirror (${env} unset)")
        if asset.package:
            parts.append(f"package {asset.package}/{asset.resource}")
        return ", ".join(parts)

    def _how_to_supply(self, asset: Asset) -> str:
        env = "EVALKIT_WEIGHTS_MIRROR" if asset.kind == "weights" else "EVALKIT_DATA_MIRROR"
        fixes = [f"put it at <folder>/{asset.name} and set {env}=<folder>"]
        if asset.package:
            fixes.append(f"install the package '{asset.package}'")
        if asset.url:
            fixes.append(f"or download it from {asset.url}")
        elif asset.manual:
            fixes.append(f"it is published at {asset.manual} (a page for a browser, not a direct download)")
        return "; ".join(fixes)

    def not_found_message(self, asset: Asset, reason: str | None = None) -> str:
        why = f" ({reason})" if reason else ""
        blocker = None if reason else self.download_blocker(asset)
        dl = f"; {blocker}" if blocker else ""
        return f"{asset.short} not found{why}: looked in {self._looked(asset)}{dl}. Fix: {self._how_to_supply(asset)}"

    def _download(self, asset: Asset, progress: bool) -> Path:
        target = self.cache_path(asset)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=".part-")
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out:
                _stream(asset.url or "", out, asset.name, progress)
            digest = sha256_file(tmp)
            expected = self.expected_sha256(asset)
            if expected is not None and digest != expected:
                raise AssetError(
                    f"{asset.short} downloaded from {asset.url} has sha256 {digest[:12]}…, expected "
                    f"{expected[:12]}…: upstream changed or the transfer was corrupted; retry or supply it via "
                    f"the mirror ({self._how_to_supply(asset)})"
                )
            os.replace(tmp, target)
            if expected is None:
                self._record_pin(asset, digest)
                print(f"note: pinned {asset.kind}/{asset.name} sha256={digest} on first download")
            return target
        except AssetError:
            raise
        except Exception as exc:  # network errors of every flavour
            raise AssetError(self.not_found_message(asset, f"download failed: {type(exc).__name__}: {exc}")) from exc
        finally:
            tmp.unlink(missing_ok=True)


def _stream(url: str, out, label: str, progress: bool) -> None:
    """Copy ``url`` into ``out`` with a rich progress bar (bytes, speed, ETA)."""
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    request = urllib.request.Request(url, headers={"User-Agent": "evalkit"})
    with urllib.request.urlopen(request, timeout=60) as response:
        total = int(response.headers.get("Content-Length") or 0) or None
        columns = (
            "[progress.description]{task.description}",
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
        )
        with Progress(*columns, disable=not progress, transient=True) as bar:
            task = bar.add_task(f"download {label}", total=total)
            shutil.copyfileobj(_Counting(response, bar, task), out, _CHUNK)


class _Counting:
    """File-like wrapper that advances a progress bar as bytes are read."""

    def __init__(self, raw, bar, task) -> None:
        self.raw, self.bar, self.task = raw, bar, task

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        self.bar.advance(self.task, len(data))
        return data
