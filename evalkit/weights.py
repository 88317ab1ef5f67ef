"""Named weight sets: the unit in which methods and metrics declare, resolve and report their weights.

A weight set's name is part of every job key and every result label (``adain[cd16x]``), so results computed with
different weights are never mixed. Its sha256s go into the job key too: swapping a file changes the key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from evalkit.assets import Asset, AssetStore
from evalkit.errors import AssetError, WeightsUnavailable


@dataclass(frozen=True)
class WeightSet:
    """A named group of files a model needs, with a description of where they come from."""

    name: str
    files: dict[str, Asset] = field(default_factory=dict)
    description: str = ""
    official: bool = False

    def digests(self) -> dict[str, str | None]:
        return {role: asset.sha256 for role, asset in self.files.items()}

    def resolve(self, store: AssetStore, download: bool = True) -> dict[str, Path]:
        """Paths for every file, verified; raises :class:`WeightsUnavailable` naming the first missing one."""
        paths: dict[str, Path] = {}
        for role, asset in self.files.items():
            try:
                if download:
                    paths[role] = store.fetch(asset)
                else:
                    found = store.locate(asset)
                    if found is None:
                        raise AssetError(store.not_found_message(asset))
                    paths[role] = found.path
            except AssetError as exc:
                raise WeightsUnavailable(f"weight set '{self.name}': {exc}") from exc
        return paths

    def availability(self, store: AssetStore) -> tuple[str, str]:
        """(status, detail) without downloading.

        Status is ``available`` (detail: where), ``downloadable``, ``missing`` or ``corrupt``.
        """
        sources, downloadable = set(), None
        for asset in self.files.values():
            try:
                found = store.locate(asset)
            except AssetError as exc:
                return "corrupt", str(exc)
            if found is not None:
                sources.add(found.source)
            elif store.download_blocker(asset) is not None:
                return "missing", store.not_found_message(asset)  # one file nobody can fetch: the set is missing
            elif downloadable is None:
                downloadable = f"{asset.name} from {asset.url}"
        if downloadable is not None:
            return "downloadable", downloadable
        return "available", ",".join(sorted(sources)) or "no files"


def weight_label(method: str, weight_set: str | None) -> str:
    """The label every table uses: ``method[weight_set]`` (bare name for methods without weights)."""
    return f"{method}[{weight_set}]" if weight_set else method


def variant_label(method: str, weight_set: str | None, variant: str = "") -> str:
    """A sweep variant's label: ``adain[cd16x] alpha=0.5`` (the weight label when there is no variant)."""
    base = weight_label(method, weight_set)
    return f"{base} {variant}" if variant else base
