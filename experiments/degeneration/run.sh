#!/usr/bin/env bash
# Holtzman et al. 2020, Table 1, on a seqgen LSTM (folk tunes, folk-rnn-style tokens).
set -euo pipefail
cd "$(dirname "$0")/../.."
python -m seqgen.run +experiment=degeneration hydra.run.dir=experiments/degeneration/run "$@"
