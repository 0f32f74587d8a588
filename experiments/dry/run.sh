#!/usr/bin/env bash
# DRY on folk tunes (default data and model) and on Tiny Shakespeare: rep_pct and seq_rep_4
# with and without DRY at similar gen/ppl. Usage: experiments/dry/run.sh /path/to/tinyshakespeare.txt
set -euo pipefail
cd "$(dirname "$0")/../.."
python -m seqgen.run +experiment=dry hydra.run.dir=experiments/dry/run_folk
python -m seqgen.run +experiment=dry_shakespeare data.path="$1" hydra.run.dir=experiments/dry/run_shakespeare
for run in folk shakespeare; do  # the files the README's tables are rendered from
  mkdir -p "experiments/dry/results/$run"
  cp "experiments/dry/run_$run/results.jsonl" "experiments/dry/run_$run/metrics.json" "experiments/dry/results/$run/"
done
python scripts/render_tables.py
