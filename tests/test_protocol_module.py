"""``evalkit.protocol`` on its own: parsing a protocol never imports torch, and the ``[executor.NAME]`` tables."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from evalkit.errors import ProtocolError
from evalkit.protocol import TOP_LEVEL, find_protocol, load_protocol, parse_protocol

ROOT = Path(__file__).resolve().parents[1]


def test_loading_a_protocol_does_not_import_torch():
    """`evalkit.protocol` is what light tools (listing, validating, planning) import: torch must stay out."""
    code = (
        "import sys, evalkit.protocol\n"
        "proto = evalkit.protocol.load_protocol('quick')\n"
        "assert proto.name == 'quick' and proto.pairs, proto\n"
        "print('torch' in sys.modules, ' '.join(sorted(m for m in sys.modules if m.startswith('evalkit'))))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=dict(os.environ), capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    imported_torch, evalkit_modules = result.stdout.strip().split(" ", 1)
    assert imported_torch == "False", f"parsing a protocol imported torch (evalkit modules loaded: {evalkit_modules})"


def test_executor_tables_parse_into_executor_options(tmp_path):
    assert "executor" in TOP_LEVEL
    text = find_protocol("quick").read_text() + (
        '\n[executor.isolated]\ntimeout = 600\ncpu_memory = "4GiB"\nstrict = true\nshare = 0.5\n'
        '\n[executor.slurm]\npartition = "gpu"\n'
    )
    path = tmp_path / "mine.toml"
    path.write_text(text)
    proto = load_protocol(str(path))
    assert proto.executor_options == {
        "isolated": {"timeout": 600, "cpu_memory": "4GiB", "strict": True, "share": 0.5},
        "slurm": {"partition": "gpu"},
    }
    assert proto.timing == load_protocol("quick").timing  # [executor.*] is options only, not the executor choice
    assert load_protocol("quick").executor_options == {}


@pytest.mark.parametrize(
    "executor,field,problem",
    [
        ("isolated", "executor", "must be a table, got str"),
        ({"isolated": 600}, "executor.isolated", "must be a table, got int"),
        ({"isolated": {"timeout": [1, 2]}}, "executor.isolated.timeout", "must be a string, number or boolean"),
        ({"slurm": {"extra": {"a": 1}}}, "executor.slurm.extra", "must be a string, number or boolean"),
        ({"bad-name": {}}, "executor", "names executor 'bad-name'"),
        ({"isolated": {"cpu memory": "4GiB"}}, "executor.isolated", "has option 'cpu memory'"),
        ({"isolated": {"a\nb": 1}}, "executor.isolated", "has option 'a\\nb'"),
    ],
)
def test_executor_table_shape_errors_are_one_line(executor, field, problem):
    with pytest.raises(ProtocolError) as info:
        parse_protocol({"executor": executor}, source="bad.toml")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"protocol bad.toml: field '{field}' {problem}")
    assert message.endswith(": fix it in the protocol file")
