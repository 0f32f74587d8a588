#!/usr/bin/env bash
# Exact MAP search vs beam search (Stahlberg & Byrne 2019), small CPU version on the synthetic
# DPFSA: (1) decoding the TRUE distribution (model=oracle), where every gap between beam and the
# mode is a search error, and (2) an LSTM trained on the DPFSA's strings.
# 100 held-out prefixes of 2 symbols; continuations within 32 tokens.
set -euo pipefail
cd "$(dirname "$0")/../.."
COMPARE='compare=[{name:beam,beam_size:1},{name:beam,beam_size:2},{name:beam,beam_size:4},{name:beam,beam_size:8},{name:beam,beam_size:16},{name:beam,beam_size:64},{name:exact,max_expansions:4000}]'
COMMON=(data=synthetic decode.prompts=heldout decode.prompt_len=2 decode.num_prompts=100
        decode.max_len=32 experiment_name=exact_search output.plots=false)
python -m seqgen.run "${COMMON[@]}" model=oracle "$COMPARE" \
  hydra.run.dir=experiments/exact_search/results/oracle "$@"
python -m seqgen.run "${COMMON[@]}" model=lstm "$COMPARE" \
  hydra.run.dir=experiments/exact_search/results/lstm "$@"
# folk tunes: the default LSTM (cached by `python -m seqgen.run`), 50 held-out openings
FOLK_COMPARE="${COMPARE/max_expansions:4000/max_expansions:20000}"
python -m seqgen.run decode.num_prompts=50 decode.batch_size=10 experiment_name=exact_search_folk \
  output.plots=false "$FOLK_COMPARE" hydra.run.dir=experiments/exact_search/results/folk "$@"
# text lines: Tiny Shakespeare with a newline as EOS (TINYSHAKESPEARE= its path), 50 line openings
python -m seqgen.run data=text "data.path=${TINYSHAKESPEARE:-../shared/data/tinyshakespeare.txt}" \
  data.line_eos=true decode.prompt_len=8 decode.max_len=96 decode.num_prompts=50 \
  decode.batch_size=10 experiment_name=exact_search_text output.plots=false "$FOLK_COMPARE" \
  hydra.run.dir=experiments/exact_search/results/text "$@"
