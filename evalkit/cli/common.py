"""Options shared by several commands (mirrors, cache, device)."""

from __future__ import annotations

from pathlib import Path

import typer

from evalkit.assets import AssetSettings, configure

WeightsMirror = typer.Option(None, "--weights-mirror", envvar="EVALKIT_WEIGHTS_MIRROR",
                             help="Folder laid out like the weights cache (e.g. ../shared/weights).")
DataMirror = typer.Option(None, "--data-mirror", envvar="EVALKIT_DATA_MIRROR",
                          help="Folder laid out like the data cache (e.g. ../shared/data).")
Home = typer.Option(None, "--home", envvar="EVALKIT_HOME", help="Cache folder (default ~/.cache/evalkit).")


def asset_settings(home: Path | None, weights_mirror: Path | None, data_mirror: Path | None) -> AssetSettings:
    settings = AssetSettings.from_env(
        home=str(home) if home else None,
        weights_mirror=str(weights_mirror) if weights_mirror else None,
        data_mirror=str(data_mirror) if data_mirror else None,
    )
    configure(settings)
    return settings
