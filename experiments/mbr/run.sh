#!/usr/bin/env bash
# MBR vs the mode on random DPFSA oracles (Eikema & Aziz 2020), scored by the expected utility
# under the TRUE distribution (fresh samples). CPU, a few minutes.
set -euo pipefail
cd "$(dirname "$0")/../.."
python experiments/mbr/run.py --automata 10 --fresh 1000 --candidates 16 "$@" | tee experiments/mbr/results.md
