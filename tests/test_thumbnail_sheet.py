"""scripts/thumbnail_sheet.py on a real (tiny) run of the quick protocol: layout and pixels come from the database."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from evalkit.cli import app

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("thumbnail_sheet", ROOT / "scripts" / "thumbnail_sheet.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_sheet_has_one_row_per_pair_and_identity_column_equals_content(tmp_path):
    out = tmp_path / "results"
    result = CliRunner().invoke(
        app,
        [
            "run",
            "--protocol",
            "quick",
            "--methods",
            "identity,reinhard",
            "--res",
            "64",
            "--metrics",
            "",
            "--out",
            str(out),
            "--no-progress",
        ],
    )
    assert result.exit_code == 0, result.output
    script = _script()
    height = 48
    sheet, layout = script.build_sheet(
        out, pairs=2, height=height, methods=["identity", "reinhard"], resolution=None, run=None
    )
    assert [name for name, _, _ in layout] == ["content", "style", "identity", "reinhard"]
    assert sheet.height == script.LABEL_HEIGHT + 2 * height

    def tile(column: int, row: int = 0) -> np.ndarray:
        _, x, _ = layout[column]
        y = script.LABEL_HEIGHT + row * height
        return np.asarray(sheet.crop((x, y, x + height, y + height))).astype(float)

    # first pair is astronaut + hubble_deep_field: identity reproduces the content tile (up to resampling),
    # reinhard's recoloured output does not
    assert np.abs(tile(2) - tile(0)).mean() < 6
    assert np.abs(tile(3) - tile(0)).mean() > 3 * np.abs(tile(2) - tile(0)).mean()
    jpeg = tmp_path / "sheet.jpg"
    assert script.main([str(out), "--out", str(jpeg), "--pairs", "2", "--height", str(height)]) == 0
    assert Image.open(jpeg).size[1] == script.LABEL_HEIGHT + 2 * height
    assert jpeg.stat().st_size < 200_000  # a thumbnail sheet, not a large binary
    assert script.main([str(tmp_path / "nothing-here")]) == 2
