#!/usr/bin/env bash
# The GPU check of advlora, for one CUDA GPU, in under 8 minutes:
#   1. install the project next to the machine's CUDA build of torch (never a CPU or other torch wheel);
#   2. the CUDA-marked tests (pytest -m cuda) and the bench tests;
#   3. advlora bench --device cuda: PGD-10 images/s and training-step MFU against the bf16 matmul peak measured
#      in the same run, at ViT-B/32 and BLIP-base sizes (random weights, no download);
#   4. a 200-step AdvLoRA training of a ViT-B/32-size CLIP on a synthetic COCO-shaped set (640x480 JPEGs);
#   5. scripts/open_clip_check.py: converted open_clip models against open_clip itself, where it imports.
# Everything it prints goes to ${OUT:-gpu-check}/gpu-check.log; put that output in docs/performance.md.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-check}
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu-check.log") 2>&1
t0=$(date +%s)
step() { echo; echo "== [$(( $(date +%s) - t0 )) s] $*"; }

step "1. install"
PY=${PYTHON:-python3}
if [ ! -x .venv-gpu/bin/python ]; then
  # the system site-packages carry the machine's CUDA torch; the constraints pin everything else
  "$PY" -m venv --system-site-packages .venv-gpu
fi
.venv-gpu/bin/python -c "import torch; assert torch.cuda.is_available(), 'torch sees no CUDA device'; \
print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))"
grep -v '^torch==' constraints.txt > "$OUT/constraints-no-torch.txt"
.venv-gpu/bin/pip install -q -c "$OUT/constraints-no-torch.txt" -e '.[dev]' \
  || .venv-gpu/bin/pip install -q --no-deps -e .   # offline machine: the dependencies must already be there
.venv-gpu/bin/python -c "import advlora, transformers, peft, accelerate; print('advlora', advlora.__version__)"

step "2. CUDA-marked tests and the bench tests"
.venv-gpu/bin/python -m pytest -q -m cuda tests/project/test_cuda.py tests/bench/test_bench_device.py -p no:cacheprovider

step "3. advlora bench --device cuda"
.venv-gpu/bin/advlora bench --device cuda --batch-size 64 --repeats 3 --out "$OUT/bench"

step "4. 200-step AdvLoRA training on a synthetic COCO-shaped set"
.venv-gpu/bin/python -c "from advlora.bench.device import synthetic_photos; print(synthetic_photos('$OUT/photos', 2048))"
/usr/bin/time -v .venv-gpu/bin/advlora train --data "$OUT/photos/annotations.jsonl" --method advlora \
  --steps 200 --batch-size 64 --eps 4/255 --out "$OUT/train" --random-model clip:vit-b32 --data.val_split train \
  --data.test_split train --eval.test_limit 256 2>&1 | tail -40

step "5. open_clip conversion against open_clip itself (SKIP where open_clip does not import)"
.venv-gpu/bin/python scripts/open_clip_check.py --device cuda

step "done in $(( $(date +%s) - t0 )) s"
