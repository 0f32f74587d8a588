#!/usr/bin/env bash
# Folk tunes with and without constraint=meter (issue 12, sec. 3): bar check, parse rate,
# gen/ppl under the unconstrained model, and the probability mass the constraint removed.
# The experiment is a sweep over constraint=none,meter (two jobs, one trained model).
set -euo pipefail
cd "$(dirname "$0")/../.."
python -m seqgen.run +experiment=meter_constraint hydra.sweep.dir=experiments/meter_constraint/run "$@"
