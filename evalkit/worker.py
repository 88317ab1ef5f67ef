"""Executes jobs inside one process: images, model loading, stylization, timing, metrics, failure capture.

A :class:`JobContext` lives as long as its process (the local executor's, a subprocess worker's, a Ray task's) and
caches what is expensive to rebuild: loaded method adapters, resized reference images and the metric suite. It
never writes the results store; it returns :class:`~evalkit.results.JobResult` objects to the driver, each with the
same typed extras whatever the executor: the environment it ran on, the loaded model's counts, the timed repeats,
and a structured reason when it failed. It resolves every file through the asset store built from the
configuration it was given (never a process-wide one), so planning and execution always agree on where files are.
"""

from __future__ import annotations

import json
import resource
import statistics
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from evalkit import environment, imaging, method_files, precision
from evalkit.adapter import Masks, MethodAdapter
from evalkit.assets import AssetSettings, AssetStore, sha256_file
from evalkit.errors import EvalkitError, WeightsUnavailable
from evalkit.fits import FitKey, FitStore, Fitted, default_root
from evalkit.imaging import Resolution
from evalkit.metrics import EvalSample, MetricSuite
from evalkit.protocol import Protocol
from evalkit.registry import get_method
from evalkit.results import (
    JobResult,
    MetricState,
    MetricValue,
    ModelInfo,
    Reason,
    Timing,
    failure,
    looks_like_oom,
    rusage_peak_bytes,
    utcnow,
)
from evalkit.specs import JobSpec, ScoreJob, Work
from evalkit.weights import weight_label


@dataclass
class WorkerConfig:
    """Everything a worker needs, as plain picklable data."""

    protocol: Protocol
    device: str = "cpu"
    metrics: list[str] = field(default_factory=list)
    assets: dict[str, Any] = field(default_factory=dict)
    warmup: int = 0  # untimed runs before the timed ones (caches, cuDNN autotuning, lazy allocations)
    repeats: int = 1  # timed runs; the job row holds their median, the timings table each one
    executor: str = "local"  # recorded in every job's environment
    channels_last: bool = True  # the exact fast path for convolutions (False: plain NCHW, for benchmarks)
    # methods loaded from files (--methods ./file.py:NAME): name -> (absolute path, attribute), imported by workers
    method_files: dict[str, tuple[str, str]] = field(default_factory=dict)
    # outputs made elsewhere (evalkit import): file sha256 -> path; the job of an imported output reads its file
    imports: dict[str, str] = field(default_factory=dict)


def is_oom(exc: BaseException) -> bool:
    return isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError" or looks_like_oom(str(exc))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory(device: torch.device) -> int:
    """Peak bytes: CUDA's allocator peak on GPU, the process's peak resident set on CPU."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return rusage_peak_bytes(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def method_version_problem(spec: Work, where: str) -> str | None:
    """Why a cluster worker (``where``: Ray, Slurm) must not run ``spec``: its method is missing or has another
    version than the driver planned. A job is never stored under a version it did not run."""
    try:
        version = get_method(spec.method).version
    except EvalkitError as exc:
        return str(exc)
    if version != spec.method_version:
        return (
            f"this worker has {spec.method} version {version} but the driver planned version "
            f"{spec.method_version}: install the same evalkit on every {where} node"
        )
    return None


class JobContext:
    def __init__(self, config: WorkerConfig, environment_extra: dict[str, Any] | None = None) -> None:
        self.config = config
        self.protocol = config.protocol
        for path, attr in config.method_files.values():
            method_files.register(path, attr)
        self.device = torch.device(config.device)
        self.assets = AssetStore(AssetSettings(**config.assets)) if config.assets else AssetStore.from_env()
        self.environment = environment.job_environment(
            self.device, config.executor, config.warmup, config.repeats, environment_extra
        )
        self._adapters: dict[tuple[str, str | None, str], tuple[MethodAdapter, float]] = {}
        self._weight_files: dict[tuple[str, str | None, str], dict[str, Path]] = {}
        self.fits = FitStore(default_root(self.assets.home))
        # True: a new output's metrics are left to the caller (the local executor's scoring process) and its request
        # kept in ``deferred`` by job key; the caller fills the result's metrics and time_score_s
        self.defer_scoring = False
        self.deferred: dict[str, tuple[JobSpec, list[str]]] = {}
        self._images: dict[tuple[str, str], Any] = {}
        self._suite: MetricSuite | None = None

    # -- inputs ---------------------------------------------------------------------------------------------------
    def image(self, image_id: str, resolution: Resolution, warnings: list[str] | None = None):
        """Decoded, resized PIL image for a protocol image id (cached per size).

        Images below the protocol's ``min_image_side`` are an error naming the file; an enlargement by more than
        :data:`~evalkit.imaging.MAX_UPSCALE` is appended to ``warnings`` (recorded on the job)."""
        key = (image_id, resolution.name)
        if key not in self._images:
            path = self.assets.fetch(self.protocol.images[image_id])
            source = imaging.load_image(path)
            imaging.check_min_side(source, path, self.protocol.min_image_side)
            resized = imaging.resize(source, resolution)
            self._images[key] = (resized, imaging.upscale_factor(source.size, resized.size), source.size, path)
            if len(self._images) > 16:  # a 4K image is 25 MB decoded: keep the cache bounded
                self._images.pop(next(iter(self._images)))
        resized, factor, size, path = self._images[key]
        if warnings is not None and factor > imaging.MAX_UPSCALE:
            warnings.append(
                f"image {Path(path).name} ({size[0]}x{size[1]}) was upscaled {factor:.1f}x to "
                f"{resized.size[0]}x{resized.size[1]}: results at this resolution show interpolation, "
                f"not the method"
            )
        return resized

    def masks(self, spec: JobSpec, content_res: Resolution, style_res: Resolution) -> Masks | None:
        if not (spec.content_mask and spec.style_mask):
            return None
        colours = [
            imaging.load_mask_colors(self.assets.fetch(self.protocol.images[i]))
            for i in (spec.content_mask, spec.style_mask)
        ]
        labels = imaging.colors_to_labels(colours)
        content = imaging.fit_labels(labels[0], content_res)
        style = imaging.fit_labels(labels[1], style_res)
        return Masks(torch.from_numpy(content).to(self.device), torch.from_numpy(style).to(self.device))

    # -- models ---------------------------------------------------------------------------------------------------
    def adapter(self, spec: JobSpec) -> tuple[MethodAdapter, float]:
        """A loaded adapter (and its load time, seconds): built once per process, never inside a timer."""
        key = (spec.method, spec.weight_set, str(self.device))
        if key not in self._adapters:
            cls = get_method(spec.method)
            files = cls.weight_sets[spec.weight_set].resolve(self.assets) if spec.weight_set else {}
            start = time.perf_counter()
            adapter = cls(spec.weight_set, self.device, assets=self.assets)
            adapter.load(files)
            if self.config.channels_last:
                precision.modules_to_channels_last(adapter)
            sync(self.device)
            self._adapters[key] = (adapter, time.perf_counter() - start)
            self._weight_files[key] = files
        return self._adapters[key]

    def fitted(self, spec: JobSpec, adapter: MethodAdapter, style: torch.Tensor, params: dict[str, Any]) -> Fitted:
        """The method's fit of this job's style (:meth:`~evalkit.adapter.MethodAdapter.fit_style`): learned once
        per style and kept (:mod:`evalkit.fits`), with gradients, outside the method's timers."""
        cls = type(adapter)
        files = self._weight_files.get((spec.method, spec.weight_set, str(self.device)), {})
        resolved = cls.resolve_params(params)
        key = FitKey(
            method=spec.method,
            version=cls.version,
            weights=json.dumps([weight_label(spec.method, spec.weight_set), {k: str(v) for k, v in files.items()}]),
            style_sha256=str(spec.image_digests["style"]),  # the protocol pins every image's sha256
            style_size=spec.style_size,
            precision=spec.precision,
            params={name: resolved[name] for name in cls.fit_params},
        )

        def learn() -> dict[str, torch.Tensor]:
            with torch.enable_grad(), precision.networks(spec.precision, self.device):
                return adapter.fit_style(style, **params)

        return self.fits.get(key, learn, self.device)

    def model_info(self, spec: JobSpec) -> ModelInfo | None:
        """Counts of the model loaded for ``spec`` (``None`` when it is not loaded, e.g. its weights are missing)."""
        loaded = self._adapters.get((spec.method, spec.weight_set, str(self.device)))
        if loaded is None:
            return None
        details = loaded[0].info()
        return ModelInfo(weight_label(spec.method, spec.weight_set), details.parameters, details.layers)

    @property
    def suite(self) -> MetricSuite:
        """The run's metrics, built once per process (score jobs ask it for a subset)."""
        if self._suite is None:
            self._suite = MetricSuite(self.config.metrics, self.device, self.assets, feature_cache=True)
        return self._suite

    # -- one job --------------------------------------------------------------------------------------------------
    def run_checked(self, spec: Work, where: str) -> JobResult:
        """:meth:`run` on a worker of a cluster (``where``: Ray, Slurm), after :func:`method_version_problem`."""
        problem = method_version_problem(spec, where)
        if problem:
            return failure(spec.key, "error", problem, Reason.BAD_INPUT, str(self.device))
        return self.run(spec)

    def run(self, spec: Work) -> JobResult:
        if isinstance(spec, ScoreJob):
            return self._score_existing(spec)
        started = utcnow()
        result = JobResult(
            key=spec.key, status="error", device=str(self.device), started=started, environment=self.environment
        )
        try:
            self._run(spec, result)
        except WeightsUnavailable as exc:
            result.status, result.message, result.reason = "unavailable", str(exc), Reason.UNAVAILABLE
        except EvalkitError as exc:
            result.status, result.message, result.reason = "error", str(exc), Reason.BAD_INPUT
        except BaseException as exc:  # noqa: BLE001 - a job failure is a result, never a crash of the run
            if isinstance(exc, KeyboardInterrupt):
                raise
            if is_oom(exc):
                result.status, result.reason = "oom", Reason.OOM
                result.message = f"out of memory: {str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__}"
            else:
                last = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
                where = f" at {last[0].filename.rsplit('/', 1)[-1]}:{last[0].lineno}" if last else ""
                result.status, result.reason = "error", Reason.EXCEPTION
                result.message = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}{where}"
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
        result.model_info = self.model_info(spec)
        result.finished = utcnow()
        return result

    def _run_imported(self, spec: JobSpec, result: JobResult) -> None:
        """An output made elsewhere: its file (sha256-checked) becomes the job's output, at the content's size, with
        no timing (the speed table says "not timed (imported)"). A pair without a file is recorded ``missing``."""
        if spec.source == "missing":
            result.status, result.reason = "missing", Reason.BAD_INPUT
            result.message = "no output file for this pair in the imported folder"
            return
        path = self.config.imports.get(spec.source)
        if path is None:
            raise EvalkitError(f"no imported file with sha256 {spec.source[:12]}…: import the folder again")
        actual = sha256_file(Path(path))
        if actual != spec.source:
            raise EvalkitError(f"{path} changed while it was being imported (sha256 {actual[:12]}…): import again")
        content_img = self.image(spec.content, Resolution.parse(spec.resolution), result.warnings)
        output = imaging.fit_imported(imaging.load_image(path), content_img.size, path)
        result.png = imaging.png_bytes(output)
        result.width, result.height = output.size
        result.status = "ok"
        self._score_new(result, spec, output, content_img)

    def _run(self, spec: JobSpec, result: JobResult) -> None:
        if spec.imported:
            self._run_imported(spec, result)
            return
        res = Resolution.parse(spec.resolution)
        style_res = Resolution.parse(spec.style_size)
        content_img = self.image(spec.content, res, result.warnings)
        style_img = self.image(spec.style, style_res, result.warnings)
        masks = self.masks(spec, res, style_res)
        adapter, load_s = self.adapter(spec)
        result.time_load_s = load_s
        content = imaging.to_tensor(content_img, self.device)
        style = imaging.to_tensor(style_img, self.device)
        if self.config.channels_last:
            content, style = precision.to_channels_last(content), precision.to_channels_last(style)
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        params = dict(spec.params)
        fit: dict[str, Any] = {}
        if adapter.fits_style():
            fitted = self.fitted(spec, adapter, style, params)
            result.time_fit_s = fitted.seconds  # None when an earlier job (or run) learned this style
            fit["fitted"] = fitted.tensors
        timings: list[Timing] = []
        output = None
        with torch.enable_grad() if adapter.needs_grad else torch.no_grad():
            for i in range(max(0, self.config.warmup) + max(1, self.config.repeats)):
                output = None  # free the previous run's output first, so the peak is that of one run
                sync(self.device)
                start = time.perf_counter()
                with precision.networks(spec.precision, self.device):
                    out = adapter.stylize(content, style, masks=masks, seed=spec.seed, **params, **fit)
                sync(self.device)
                network_s = time.perf_counter() - start
                start = time.perf_counter()
                with precision.networks(spec.precision, self.device):
                    post = adapter.postprocess(out, content, **params)
                sync(self.device)
                post_s = time.perf_counter() - start if post is not None else None
                output = post if post is not None else out
                del out, post
                if i >= self.config.warmup:
                    timings.append(Timing(network_s, post_s))
        result.time_network_s = statistics.median(t.network_s for t in timings)
        posts = [t.post_s for t in timings if t.post_s is not None]
        result.time_post_s = statistics.median(posts) if posts else None
        result.timings = timings
        result.peak_memory_bytes = peak_memory(self.device)
        assert output is not None  # at least one timed run
        output = output.detach().float()
        if not torch.isfinite(output).all():
            raise EvalkitError(f"{spec.label} produced NaN/Inf values on pair '{spec.pair_id}'")
        if output.shape[-2:] != content.shape[-2:]:
            output = F.interpolate(output, size=content.shape[-2:], mode="bilinear", align_corners=False)
        output = output.clamp(0, 1)
        pil = imaging.to_pil(output)
        result.png = imaging.png_bytes(pil)
        result.width, result.height = pil.size
        result.status = "ok"
        self._score_new(result, spec, pil, content_img)

    def _score_existing(self, job: ScoreJob) -> JobResult:
        """A :class:`~evalkit.specs.ScoreJob`: the missing metrics of a finished job's stored output (no stylizing)."""
        from PIL import Image

        result = JobResult(
            key=job.key, status="ok", device=str(self.device), started=utcnow(), environment=self.environment
        )
        try:
            with Image.open(job.output_path) as img:
                self._timed_score(result, job.job, img.convert("RGB"), list(job.metrics))
        except Exception as exc:  # noqa: BLE001 - a stored output that cannot be scored is a result too
            result.status, result.reason = "error", Reason.EXCEPTION
            result.message = f"scoring the stored output failed: {type(exc).__name__}: {exc}"
        result.finished = utcnow()
        return result

    def _score_new(self, result: JobResult, spec: JobSpec, output_img, content_img) -> None:
        """Metrics of a new output: now, or (``defer_scoring``) recorded as a request for the caller."""
        if self.defer_scoring and self.config.metrics:
            self.deferred[result.key] = (spec, list(self.config.metrics))
            return
        self._timed_score(result, spec, output_img, self.config.metrics, content_img)

    def _timed_score(self, result: JobResult, spec: JobSpec, output_img, names: list[str], content_img=None) -> None:
        """Metrics into ``result``, with the harness's time for them (``time_score_s``: what scoring costs per
        output, reported apart from the method's own time)."""
        start = time.perf_counter()
        result.metrics, result.states = self.score(spec, output_img, names, content_img)
        sync(self.device)
        result.time_score_s = time.perf_counter() - start

    def score(
        self, spec: JobSpec, output_img, names: list[str], content_img=None
    ) -> tuple[list[MetricValue], list[MetricState]]:
        """Metrics ``names`` (values of image-level metrics, states of set-level ones) at the evaluation size (short
        side ``eval_size``) for an output image."""
        if not names:
            return [], []
        eval_res = Resolution.parse(spec.eval_size)
        if content_img is None:
            content_img = self.image(spec.content, Resolution.parse(spec.resolution))
        out_eval = imaging.resize(output_img, eval_res)
        content_eval = imaging.resize(content_img, eval_res)
        style_eval = self.image(spec.style, eval_res)
        sample = EvalSample(
            output=imaging.to_tensor(out_eval, self.device),
            content=imaging.to_tensor(content_eval, self.device),
            style=imaging.to_tensor(style_eval, self.device),
            output_key=f"out:{spec.key}",
            content_key=spec.reference_key("content"),
            style_key=spec.reference_key("style"),
        )
        with torch.no_grad():
            values, states = self.suite.score(sample, names)
        return values, states
