"""Build a weights folder for speed measurements: the real files where the mirror has them, shape-exact synthetic
substitutes where it does not.

    python scripts/substitute_weights.py --out /tmp/substitute-weights [--methods wct2,photowct,...]
    EVALKIT_WEIGHTS_MIRROR=/tmp/substitute-weights evalkit run --protocol speed -r results/speed-substitute

Why: a network's running time and memory depend on its layer shapes, not on its weight values, so a checkpoint of
exactly the official layout (checked by the same loaders) measures the speed row of a method whose real weights
cannot be had (WCT², PhotoWCT, PhotoNAS, PhotoWCT2's data files, WCT levels 4-5). Outputs computed with such files
are noise and say nothing about quality: keep their results in their own results root. The folder gets a
SUBSTITUTES.md listing every synthetic file; real files are symlinks into the mirror (``EVALKIT_WEIGHTS_MIRROR``).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path

import torch


def _torch_state(build: Callable[[], torch.nn.Module], keep_fixed: bool = False) -> Callable[[Path, int], None]:
    """A writer of ``build()``'s state dict with random values; ``keep_fixed`` keeps non-learned buffers and
    fixed filters (WCT²'s Haar banks) as constructed."""

    def write(path: Path, seed: int) -> None:
        from evalkit_methods._vgg_autoencoders import synthetic_state

        net = build()
        state = synthetic_state(net, seed)
        if keep_fixed:
            state = {k: (v if ("pool" in k or "recon" in k) else state[k]) for k, v in net.state_dict().items()}
        torch.save(state, path)

    return write


def writers() -> dict[str, Callable[[Path, int], None]]:
    """Mirror-relative file name -> writer of a synthetic file of its exact official layout."""
    from evalkit_methods import _vgg_autoencoders as AE
    from evalkit_methods.photonas import NasDecoder
    from evalkit_methods.photowct import PhotoWCTNet
    from evalkit_methods.wct2 import WaveDecoder, WaveEncoder

    out: dict[str, Callable[[Path, int], None]] = {
        "photowct/photo_wct.pth": _torch_state(PhotoWCTNet),
        "photonas/decoder_epoch_2.pth.tar": _torch_state(NasDecoder),
        "adain/vgg_normalised.pth": _torch_state(lambda: AE.build_encoder("official", 5, full_vgg=True)),
        "adain/decoder.pth": _torch_state(lambda: AE.build_decoder("official", 4)),
    }
    for option in ("cat5", "sum"):
        out[f"wct2/wave_encoder_{option}_l4.pth"] = _torch_state(lambda o=option: WaveEncoder(o), keep_fixed=True)
        out[f"wct2/wave_decoder_{option}_l4.pth"] = _torch_state(lambda o=option: WaveDecoder(o), keep_fixed=True)
    for level in range(1, 6):
        out[f"wct/vgg_normalised_conv{level}_1.pth"] = _torch_state(lambda k=level: AE.build_encoder("official", k))
        out[f"wct/feature_invertor_conv{level}_1.pth"] = _torch_state(lambda k=level: AE.build_decoder("official", k))
    for model in ("conv", "relu"):
        for part in ("encoder", "decoder"):
            out[f"photowct2/ckpts-{model}/{part}.data-00000-of-00001"] = _bundle_data(model, part)
    return out


def _bundle_data(model: str, part: str) -> Callable[[Path, int], None]:
    def write(path: Path, seed: int) -> None:
        from evalkit import tf_bundle

        index = path.parent / f"{part}.index"  # the real index, linked first (files are made in sorted order)
        tf_bundle.write_synthetic_data(index, path, seed)

    return write


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--methods", default="photonas,wct2,photowct,photowct2,pca_kd,adain,wct,microast")
    args = parser.parse_args()
    from evalkit.registry import available_methods, get_method

    mirror = os.environ.get("EVALKIT_WEIGHTS_MIRROR")
    make = writers()
    synthetic, real = [], []
    methods = [m for m in args.methods.split(",") if m in available_methods()]
    names = sorted(
        {a.name for m in methods for ws in get_method(m).weight_sets.values() for a in ws.files.values()},
        key=lambda n: (n.endswith(".data-00000-of-00001"), n),  # indexes before the data written from them
    )
    for seed, name in enumerate(names):
        target = args.out / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.unlink(missing_ok=True)
        source = Path(mirror) / name if mirror else None
        if source is not None and source.is_file():
            target.symlink_to(source.resolve())
            real.append(name)
        elif name in make:
            make[name](target, seed)
            synthetic.append(name)
        else:
            print(f"no real file and no synthetic writer for {name}: that weight set will be unavailable")
    (args.out / "SUBSTITUTES.md").write_text(
        "# Substitute weights (speed measurements only)\n\nSynthetic, shape-exact files (outputs are noise):\n\n"
        + "".join(f"- `{n}`\n" for n in synthetic)
        + "\nReal files (symlinks into the mirror):\n\n"
        + "".join(f"- `{n}`\n" for n in real)
    )
    print(f"{args.out}: {len(real)} real, {len(synthetic)} synthetic (listed in SUBSTITUTES.md)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
