#!/usr/bin/env bash
# Contrastive search (Su et al. 2022) on Tiny Shakespeare against greedy, beam and sampling.
# Usage: experiments/contrastive/run.sh /path/to/tinyshakespeare.txt
set -euo pipefail
cd "$(dirname "$0")/../.."
python -m seqgen.run +experiment=contrastive data.path="$1" hydra.run.dir=experiments/contrastive/run
