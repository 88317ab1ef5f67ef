"""The precision axis: ``--precision`` makes its own jobs, recorded per job and shown in reports; bf16 changes the
networks only (metrics stay fp32), tf32 is refused off CUDA."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from evalkit.assets import AssetSettings
from evalkit.cli import app
from evalkit.errors import EvalkitError
from evalkit.runner import RunRequest, run_benchmark
from evalkit.store import ResultsStore
from tests.conftest import WEIGHTS_MIRROR
from tests.test_runner import _gradient, _save, write_protocol


def test_tf32_is_refused_off_cuda(tmp_path):
    with pytest.raises(EvalkitError, match="tf32 is a CUDA"):
        run_benchmark(
            RunRequest(protocol="quick", methods=["identity"], out=tmp_path, precision="tf32", progress=False)
        )
    with pytest.raises(EvalkitError, match="unknown precision 'fp8'"):
        run_benchmark(RunRequest(protocol="quick", methods=["identity"], out=tmp_path, precision="fp8", progress=False))
    assert not (tmp_path / "evalkit.sqlite").exists()


@pytest.mark.skipif(WEIGHTS_MIRROR is None, reason="needs the cd16x weights from the mirror")
@pytest.mark.mirror
def test_bf16_jobs_are_separate_close_to_fp32_and_shown_as_such(tmp_path):
    mirror = tmp_path / "data"
    (mirror / "t").mkdir(parents=True)
    shas = {
        "style": _save(mirror / "t" / "style.img", _gradient(64, 48).rotate(90, expand=True), format="PNG"),
        "c1": _save(mirror / "t" / "c1.img", _gradient(80, 64), format="PNG"),
    }
    protocol = write_protocol(tmp_path, shas, [("p1", "c1", "style")], resolutions='["64"]')
    protocol.write_text(protocol.read_text().replace('resolutions = ["32"]\n', ""))
    out = tmp_path / "results"
    assets = AssetSettings(home=os.environ["EVALKIT_HOME"], data_mirror=str(mirror), weights_mirror=str(WEIGHTS_MIRROR))
    for precision in ("fp32", "bf16"):
        summary = run_benchmark(
            RunRequest(
                protocol=str(protocol),
                methods=["adain[cd16x]"],
                out=out,
                assets=assets,
                precision=precision,
                progress=False,
            )
        )
        assert summary.counts == {"ok": 1} and summary.reused == 0  # bf16 did not reuse the fp32 job
    with ResultsStore(out) as store:
        jobs = store.jobs_frame().set_index("precision")
        metrics = store.metrics_frame()
    assert sorted(jobs.index) == ["bf16", "fp32"]
    fp32, bf16 = (np.asarray(Image.open(out / jobs.loc[p, "output_path"]), np.float64) for p in ("fp32", "bf16"))
    psnr = 10 * np.log10(255.0**2 / np.mean((fp32 - bf16) ** 2))
    assert 25 < psnr < 100  # close, and not the same computation
    assert set(metrics["status"]) == {"ok"}
    board = CliRunner().invoke(app, ["leaderboard", "--results", str(out), "--format", "md", "--out", "-"])
    assert board.exit_code == 0 and "adain\\[cd16x\\] bf16" in board.output, board.output
    speed = CliRunner().invoke(app, ["speed", "--results", str(out), "--run", "all", "--format", "csv"])
    assert speed.exit_code == 0 and "adain[cd16x] bf16," in speed.output and "adain[cd16x]," in speed.output


def test_transforms_stay_in_full_precision_under_autocast():
    from evalkit_methods import _transforms as T

    g = torch.Generator().manual_seed(0)
    content = torch.randn(1, 8, 20, 20, generator=g)
    style = torch.randn(1, 8, 16, 16, generator=g) * 2 + 1
    reference = T.wct(content, style)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = T.wct(content, style)
        halves = T.wct(content.bfloat16(), style.bfloat16())
    assert inside.dtype == torch.float32 and torch.equal(inside, reference)  # autocast did not reach the algebra
    assert halves.dtype == torch.float32  # bf16 features are upcast, never whitened in bf16
