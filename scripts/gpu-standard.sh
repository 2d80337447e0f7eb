#!/usr/bin/env bash
# The README's standard-suite table on a GPU (issue 14's acceptance run, hours on 2 CPU cores): the tiny CLIP,
# pre-trained on emoji-source (deterministic), under APGD-CE 100 + APGD-T 9x100 + Square 5000 (margin) at
# linf 1/255, 2/255 and 4/255 on 500 emoji-source test images, in float32. Run scripts/gpu-check.sh first (it
# makes .venv-gpu). Output: ${OUT:-gpu-check}/standard.log; put its table, verdict line and wall time in the README.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-check}
mkdir -p "$OUT"
export ADVLORA_HOME=${ADVLORA_HOME:-$PWD/$OUT/home}
/usr/bin/time -v .venv-gpu/bin/advlora eval --model tiny-clip --data emoji-source --limit 500 --attacks standard \
  --eps 1/255,2/255,4/255 --device cuda --progress log --out "$OUT/standard" 2>&1 | tee "$OUT/standard.log"
