"""The example of docs/python-api.md runs as written (in a fresh folder, as a notebook user would)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "python-api.md"


def test_the_python_api_example_runs(tmp_path):
    block = re.search(r"```python\n(.*?)```", DOC.read_text(), re.S)
    assert block is not None
    script = tmp_path / "example.py"
    script.write_text(block.group(1))
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "reinhard" in done.stdout and "python:stylize" in done.stdout  # a function of the running script
    assert "niqe" in done.stdout
    assert (tmp_path / "results" / "evalkit.sqlite").is_file()
