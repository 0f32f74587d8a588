#!/usr/bin/env bash
# The beam-search curse: beam width 1..64 x length normalization, on the default folk LSTM.
set -euo pipefail
cd "$(dirname "$0")/../.."
python -m seqgen.run +experiment=beam_sweep hydra.sweep.dir=experiments/beam_curse/sweep "$@"
