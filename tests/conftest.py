"""Shared fixtures: mirror locations, an isolated EVALKIT_HOME, and a real third-party plugin package.

The plugin (``evalkit-testplugin``) is built and installed with pip into a private target folder, exactly as a user
would install a package that registers adapters under the ``evalkit.methods`` entry-point group and a metric under
``evalkit.metrics``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


def _mirror(var: str, sub: str) -> Path | None:
    value = os.environ.get(var)
    if value:
        return Path(value)
    candidate = SHARED / sub
    return candidate if candidate.is_dir() else None


WEIGHTS_MIRROR = _mirror("EVALKIT_WEIGHTS_MIRROR", "weights")
DATA_MIRROR = _mirror("EVALKIT_DATA_MIRROR", "data")
needs_data = pytest.mark.skipif(DATA_MIRROR is None, reason="EVALKIT_DATA_MIRROR not set and ../shared/data absent")
needs_weights = pytest.mark.skipif(
    WEIGHTS_MIRROR is None, reason="EVALKIT_WEIGHTS_MIRROR not set and ../shared/weights absent"
)


@pytest.fixture
def one_thread():
    """One intra-op thread for eigh/conv-heavy tests: on the shared 2-core CI machine, 2 threads per process made
    convs and eigh 8x slower (oversubscription); restored afterwards so other modules keep their setting."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def shared_home(tmp_path_factory) -> Path:
    """One EVALKIT_HOME for the session, so the dequantised VGG-19 is built once."""
    home = Path(os.environ.get("EVALKIT_HOME") or tmp_path_factory.mktemp("evalkit_home"))
    os.environ["EVALKIT_HOME"] = str(home)
    return home


@pytest.fixture(autouse=True)
def _configure_assets(shared_home, monkeypatch):
    """The mirrors for every test, through the environment (evalkit has no process-wide asset store)."""
    if WEIGHTS_MIRROR:
        monkeypatch.setenv("EVALKIT_WEIGHTS_MIRROR", str(WEIGHTS_MIRROR))
    if DATA_MIRROR:
        monkeypatch.setenv("EVALKIT_DATA_MIRROR", str(DATA_MIRROR))
    yield


@pytest.fixture
def asset_store(_configure_assets):
    """The asset store a command would build from this test's environment."""
    from evalkit.assets import AssetStore

    return AssetStore.from_env()


PLUGIN_SOURCE = '''
"""A third-party evalkit adapter package used by the tests."""
import time
import torch
from evalkit.adapter import MethodAdapter, Param, LoadedInfo


class MeanShift(MethodAdapter):
    """Moves the content's channel means to the style's (deterministic, weight-free, fast)."""
    name = "meanshift"
    kind = "artistic"
    params = {"strength": Param(1.0, "0 = content, 1 = full shift"), "sleep": Param(0.0, "seconds to sleep")}

    def info(self):
        return LoadedInfo(parameters=0, layers=0)

    def stylize(self, content, style, masks=None, seed=0, **params):
        time.sleep(params["sleep"])
        shift = style.mean(dim=(2, 3), keepdim=True) - content.mean(dim=(2, 3), keepdim=True)
        return (content + params["strength"] * shift).clamp(0, 1)


class Boom(MethodAdapter):
    """Always raises, to prove a failing job is a recorded result and the run goes on."""
    name = "boom"

    def stylize(self, content, style, masks=None, seed=0, **params):
        raise RuntimeError("boom adapter exploded on purpose")


from evalkit.metrics.base import Metric, MetricInfo


class MeanAbsDiff(Metric):
    """A third-party metric: mean absolute difference of output and content, in grey levels (0-255)."""
    info = MetricInfo(name="mean_abs_diff", higher_is_better=False, reference="content", range=(0.0, 255.0),
                      description="mean |output - content| in grey levels", definition="mean(|O - C|) * 255")

    def compute(self, sample, features=None):
        return float((sample.output - sample.content).abs().mean() * 255.0)


import os
import numpy as np
from evalkit.metrics.base import SetMetric


class GreyGap(SetMetric):
    """A third-party set-level metric: the mean grey level of a row's outputs minus that of their style images.

    Each call of ``image_state`` appends the output's key to $GREY_GAP_LOG (when set), so tests can prove that a
    resumed run or a reduction never recomputes a stored state."""
    info = MetricInfo(name="grey_gap", higher_is_better=False, reference="style", range=(-255.0, 255.0),
                      description="mean grey level of the outputs minus that of their styles", level="set",
                      definition="mean_i mean(O_i) * 255 - mean_i mean(S_i) * 255, S_i the style of output i's pair")

    def image_state(self, sample, features):
        log = os.environ.get("GREY_GAP_LOG")
        if log:
            with open(log, "a") as fh:
                fh.write(sample.output_key + "\\n")
        return np.array([float(sample.output.mean()) * 255.0])

    def reference_state(self, image, key, features):
        return np.array([float(image.mean()) * 255.0])

    def reduce(self, states, references):  # references: one per state (the style of each output's pair)
        return float(np.mean([s[0] for s in states]) - np.mean([r[0] for r in references]))


from evalkit.executors.base import ExecutorBase
from evalkit.params import Param
from evalkit.worker import JobContext


class Inline(ExecutorBase):
    """A third-party executor: jobs in this process, newest first, counting its map calls (one context per run)."""
    name = "inline"
    summary = "the test plug-in's executor"
    options = {"reverse": Param(True, "run each wave's jobs in reverse order")}

    def __init__(self, reverse=True):
        self.reverse = reverse
        self.maps = 0
        self.context = None

    def map(self, specs, config):
        self.maps += 1
        if self.context is None:
            self.context = JobContext(config, environment_extra={"executor_plugin": "inline"})
        for spec in (list(reversed(specs)) if self.reverse else specs):
            yield self.context.run(spec)

    def describe(self):
        return f"inline executor (reverse={self.reverse})"
'''


@pytest.fixture(scope="session")
def plugin_site(tmp_path_factory) -> Path:
    """Build and pip-install the test plugin into a private folder; returns the folder (put it on PYTHONPATH)."""
    src = tmp_path_factory.mktemp("plugin_src")
    (src / "evalkit_testplugin").mkdir()
    (src / "evalkit_testplugin" / "__init__.py").write_text(PLUGIN_SOURCE)
    (src / "pyproject.toml").write_text(
        textwrap.dedent("""
        [build-system]
        requires = ["setuptools"]
        build-backend = "setuptools.build_meta"
        [project]
        name = "evalkit-testplugin"
        version = "0.0.1"
        [project.entry-points."evalkit.methods"]
        meanshift = "evalkit_testplugin:MeanShift"
        boom = "evalkit_testplugin:Boom"
        [project.entry-points."evalkit.metrics"]
        mean_abs_diff = "evalkit_testplugin:MeanAbsDiff"
        grey_gap = "evalkit_testplugin:GreyGap"
        [project.entry-points."evalkit.executors"]
        inline = "evalkit_testplugin:Inline"
        [tool.setuptools]
        packages = ["evalkit_testplugin"]
    """)
    )
    site = tmp_path_factory.mktemp("plugin_site")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(site),
            str(src),
        ],
        check=True,
    )
    return site


@pytest.fixture
def plugin(plugin_site, monkeypatch):
    """Make the installed plugin (two methods, two metrics, an executor) visible in this process (and to
    subprocesses through PYTHONPATH)."""
    from evalkit import metrics, registry

    monkeypatch.syspath_prepend(str(plugin_site))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(plugin_site), os.environ.get("PYTHONPATH")])))
    registry.refresh()
    metrics.refresh()
    yield plugin_site
    registry.refresh()
    metrics.refresh()
