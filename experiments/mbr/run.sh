#!/usr/bin/env bash
# MBR vs the mode on random DPFSA oracles (Eikema & Aziz 2020), scored by the expected utility
# under the TRUE distribution (fresh samples). CPU, a few minutes.
set -euo pipefail
cd "$(dirname "$0")/../.."
python experiments/mbr/run.py --automata 10 --fresh 1000 --candidates 16 | tee experiments/mbr/results.md
# folk tunes under the model: the default LSTM (cached by `python -m seqgen.run`), 50 openings;
# each output scored against 64 independent model samples (the `references` entry)
python -m seqgen.run decode.num_prompts=50 decode.num_samples=64 decode.batch_size=10 \
  experiment_name=mbr_folk output.plots=false hydra.run.dir=experiments/mbr/results/folk \
  'compare=[{name:greedy,label:greedy},{name:beam,beam_size:4,label:beam_4},{name:exact,max_expansions:20000,label:exact},{name:sample,label:ancestral},{name:mbr,utility:chrf,num_candidates:32,num_references:32,label:mbr_chrf},{name:mbr,utility:bleu,num_candidates:32,num_references:32,label:mbr_bleu},{name:mbr,utility:edit,num_candidates:32,num_references:32,label:mbr_edit},{name:sample,label:references}]' "$@"
python experiments/mbr/model_utility.py experiments/mbr/results/folk --references references \
  --samplers ancestral | tee experiments/mbr/results/folk/model_utility.md
