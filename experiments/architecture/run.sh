#!/usr/bin/env bash
# LSTM vs causal Transformer of similar size on folk tunes and Tiny Shakespeare (TINYSHAKESPEARE=
# its path, default /work/shared/data/tinyshakespeare.txt), the two data sets side by side as
# measured, then decode speed at batch 1 and 64.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=experiments/architecture/results
python -m seqgen.run +experiment=architecture hydra.sweep.dir=$out/folk "$@" &
folk=$!
python -m seqgen.run +experiment=architecture data=text data.preset=tinyshakespeare \
  "data.path=${TINYSHAKESPEARE:-/work/shared/data/tinyshakespeare.txt}" \
  hydra.sweep.dir=$out/tinyshakespeare "$@" &
text=$!
wait $folk
wait $text
python scripts/bench_models.py | tee $out/decode_speed.txt
