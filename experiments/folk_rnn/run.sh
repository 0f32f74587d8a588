#!/usr/bin/env bash
# folk-rnn (Sturm et al. 2016). On a GPU: ./run.sh ; on a CPU: ./run.sh cpu
set -euo pipefail
cd "$(dirname "$0")/../.."
exp=folk_rnn
if [ "${1:-}" = "cpu" ]; then exp=folk_rnn_cpu; shift; fi
python -m seqgen.run +experiment=$exp hydra.run.dir=experiments/folk_rnn/run_$exp "$@"
