#!/usr/bin/env bash
# Hewitt et al. 2022's precision/recall of truncation against the true support, two GRU sizes.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=experiments/truncation_oracle
python -m seqgen.run +experiment=truncation_oracle hydra.sweep.dir="$out/multirun" "$@"
mkdir -p "$out/results"
for job in "$out"/multirun/[0-9]*/; do
  size=$(sed -n 's/^- model.hidden_size=//p' "$job/.hydra/overrides.yaml")
  cp "$job/results.jsonl" "$out/results/hidden_${size}.jsonl"
done
python "$out/plot.py" "$out"/results/hidden_*.jsonl --out "$out/results/frontier.png"
