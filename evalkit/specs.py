"""Frozen job specs: one unit of work planned from a protocol, with the content-hash key that identifies its result.

A :class:`JobSpec` is what determines an output (its identity); a :class:`ScoreJob` asks a worker for the metrics
of a stored output, named by its job's key (the worker reads the PNG from the results root, read-only), so no image
bytes ever travel inside a spec.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class JobSpec:
    """One unit of work, frozen and serialisable (it travels to worker processes and Ray tasks).

    ``key`` is a content hash of everything that determines the output: method version, weight set and its
    sha256s, parameters, image sha256s, resolution, style size and seed.
    """

    method: str
    weight_set: str | None
    params: dict[str, Any]
    pair_id: str
    resolution: str
    seed: int
    content: str
    style: str
    content_mask: str | None
    style_mask: str | None
    style_size: int
    eval_size: int
    method_version: str
    weight_digests: dict[str, str | None]
    image_digests: dict[str, str | None]
    key: str = ""
    precision: str = "fp32"  # of the networks (evalkit.precision); part of the key unless fp32
    # a sweep point, e.g. "alpha=0.5": part of the label (so every table keeps the variants apart) and of the key
    variant: str = ""
    # an output made elsewhere (evalkit import): the file's sha256, or "missing" for a pair without a file
    source: str = ""

    def reference_key(self, role: str) -> str:
        """The cache key of the job's content or style image at its evaluation size (sha256 and sizes): metrics
        and stored set-level reference states are keyed by it, so every job that uses an image shares them."""
        digest = self.image_digests.get(role)
        if role == "content":  # the content is first resized to the job resolution, then to the evaluation size
            return f"img:{digest}:{self.resolution}:{self.eval_size}"
        return f"img:{digest}:{self.eval_size}"

    @property
    def imported(self) -> bool:
        return bool(self.source)

    @property
    def label(self) -> str:
        from evalkit.weights import variant_label

        return variant_label(self.method, self.weight_set, self.variant)

    def identity(self) -> dict[str, Any]:
        """Every field that determines the output. A new field is part of the key unless removed here, so a
        transient field has no place on this class (see :class:`ScoreJob`)."""
        data = asdict(self)
        data.pop("key")
        if data["precision"] == "fp32":
            data.pop("precision")  # so that keys of runs recorded before precisions existed stay valid
        if not data["variant"]:
            data.pop("variant")  # likewise for runs recorded before sweeps existed
        if not data["source"]:
            data.pop("source")  # and before imports existed
        data.pop("eval_size")  # metrics are keyed separately; changing eval size must not re-stylize
        return data

    def with_key(self) -> JobSpec:
        blob = json.dumps(self.identity(), sort_keys=True, separators=(",", ":"), default=str)
        return JobSpec(**{**asdict(self), "key": hashlib.sha256(blob.encode()).hexdigest()[:32]})

    def to_dict(self) -> dict[str, Any]:
        """The spec as stored with the job."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobSpec:
        data = {k: v for k, v in data.items() if k not in ("task", "output_png")}  # fields of older evalkits
        return cls(**data)


@dataclass(frozen=True)
class ScoreJob:
    """Score the stored output of a finished job (a resumed run that asks for a metric the output lacks).

    It names the output by its job and the file's path under the results root; the worker reads the file (the
    executors that run workers elsewhere need the results root on a shared filesystem, as they do for outputs)."""

    job: JobSpec
    output_path: str
    metrics: tuple[str, ...] = ()  # the metrics the stored output lacks

    @property
    def key(self) -> str:
        return self.job.key

    def __getattr__(self, name: str) -> Any:
        """The job's identifying fields (method, label, resolution, ...), for scheduling and progress lines."""
        if name.startswith("__") or name == "job":  # pickling, or before unpickling restored the fields
            raise AttributeError(name)
        return getattr(self.job, name)


Work = JobSpec | ScoreJob  # what the scheduler and executors move
