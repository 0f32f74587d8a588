#!/usr/bin/env bash
# char-rnn (Karpathy 2015) on Tiny Shakespeare (downloaded once, sha256-checked).
# Offline: ./run.sh data.path=/path/to/input.txt   CPU-sized: EXP=char_rnn_cpu ./run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
exp=${EXP:-char_rnn}
if [ "$#" -eq 0 ]; then set -- data.preset=tinyshakespeare; fi
python -m seqgen.run +experiment=$exp hydra.run.dir=experiments/char_rnn/run_$exp "$@"
