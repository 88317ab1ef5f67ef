"""Scoring image files with evalkit's metrics, outside any run (``evalkit score``, ``evalkit.score``).

The images are scored at their own resolution unless ``eval_size`` asks for the protocol rule (short side N,
Lanczos), so that published reference values (e.g. IQA calibration sets) can be reproduced exactly. A metric that
needs an image that was not given (a reference for full-reference metrics, a style image for the style loss) or
weights that are missing is reported ``unavailable`` with the reason.
"""

from __future__ import annotations

from pathlib import Path

from evalkit.assets import AssetStore
from evalkit.errors import EvalkitError
from evalkit.results import MetricValue


def _load(path: Path, eval_size: int | None):
    from evalkit import imaging

    img = imaging.load_image(path)
    if eval_size:
        img = imaging.resize(img, imaging.Resolution.parse(str(eval_size)))
    return img


def score_images(
    image: Path,
    names: list[str],
    store: AssetStore,
    ref: Path | None = None,
    style: Path | None = None,
    eval_size: int | None = None,
    device: str = "cpu",
) -> list[MetricValue]:
    """Metric values for ``image`` (in the order of ``names``); raises for bad input, never for a metric."""
    import torch

    from evalkit import imaging
    from evalkit.assets import sha256_file
    from evalkit.metrics import EvalSample, MetricSuite, get_metric_class, metric_names

    unknown = [n for n in names if n not in metric_names()]
    if unknown:
        raise EvalkitError(f"unknown metric(s) {', '.join(unknown)}: known metrics are {', '.join(metric_names())}")
    out_img = _load(image, eval_size)
    ref_img = _load(ref, eval_size) if ref else None
    style_img = _load(style, eval_size) if style else None
    if ref_img is not None and ref_img.size != out_img.size:
        raise EvalkitError(
            f"{image} is {out_img.size[0]}x{out_img.size[1]} but --ref {ref} is "
            f"{ref_img.size[0]}x{ref_img.size[1]}: full-reference metrics compare pixel-aligned images; "
            f"give a reference of the same size"
        )
    missing: dict[str, str] = {}
    for name in names:
        needs = get_metric_class(name).info.reference
        if needs == "content" and ref_img is None:
            missing[name] = "full-reference metric: pass --ref REFERENCE_IMAGE"
        elif needs == "style" and style_img is None:
            missing[name] = "style metric: pass --style STYLE_IMAGE"
    suite = MetricSuite([n for n in names if n not in missing], device, store)
    output = imaging.to_tensor(out_img, device)
    sample = EvalSample(
        output=output,
        content=imaging.to_tensor(ref_img, device) if ref_img is not None else output,
        style=imaging.to_tensor(style_img, device) if style_img is not None else output,
        output_key=f"file:{sha256_file(image)}:{eval_size}",
        content_key=f"file:{sha256_file(ref)}:{eval_size}" if ref else "none:content",
        style_key=f"file:{sha256_file(style)}:{eval_size}" if style else "none:style",
    )
    with torch.no_grad():
        scored = {v.name: v for v in suite.evaluate(sample)}
    return [scored.get(n) or MetricValue(n, None, "unavailable", missing[n]) for n in names]
