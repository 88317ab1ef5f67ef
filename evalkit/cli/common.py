"""Options shared by several commands (results root, mirrors, cache)."""

from __future__ import annotations

from pathlib import Path

import typer

from evalkit.assets import AssetSettings, AssetStore

WeightsMirror = typer.Option(
    None,
    "--weights-mirror",
    envvar="EVALKIT_WEIGHTS_MIRROR",
    help="Folder laid out like the weights cache (e.g. ../shared/weights).",
)
DataMirror = typer.Option(
    None,
    "--data-mirror",
    envvar="EVALKIT_DATA_MIRROR",
    help="Folder laid out like the data cache (e.g. ../shared/data).",
)
Home = typer.Option(None, "--home", envvar="EVALKIT_HOME", help="Cache folder (default ~/.cache/evalkit).")
Results = typer.Option(Path("results"), "--results", "-r", help="Results root holding evalkit.sqlite.")
# every reading command selects runs the same way (evalkit.store.selection)
RUN_HELP = "Run id (repeatable; 'all': every run of the protocol; default: every run of the latest run's protocol)."
PROTOCOL_HELP = "Every run of this protocol (default: the latest run's protocol)."


def asset_settings(home: Path | None, weights_mirror: Path | None, data_mirror: Path | None) -> AssetSettings:
    """Where this command finds weights and data: the options, else the ``EVALKIT_*`` environment."""
    return AssetSettings.from_env(
        home=str(home) if home else None,
        weights_mirror=str(weights_mirror) if weights_mirror else None,
        data_mirror=str(data_mirror) if data_mirror else None,
    )


def asset_store(home: Path | None, weights_mirror: Path | None, data_mirror: Path | None) -> AssetStore:
    return AssetStore(asset_settings(home, weights_mirror, data_mirror))
