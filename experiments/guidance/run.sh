#!/usr/bin/env bash
# Classifier-free guidance on the default folk data and model: a gamma sweep of pure sampling,
# gen/ref_ppl under the unguided default model. Then copy results.jsonl and metrics.json into
# experiments/guidance/results/ and run scripts/render_tables.py.
set -euo pipefail
cd "$(dirname "$0")/../.."
# the default model's cache folder (content-addressed: the default run trains it once)
REF=$(python -c "
from seqgen.compose import compose_config
from seqgen.data.corpus import load_corpus
from seqgen.model_store import ModelSpec, model_cache_key
from seqgen.paths import cache_root
cfg = compose_config([])
corpus = load_corpus(cfg.data, int(cfg.seed))
print(cache_root(cfg.cache_dir) / 'models' / model_cache_key(ModelSpec.of(cfg), corpus))")
python -m seqgen.run +experiment=guidance metrics.reference_checkpoint="$REF" \
  hydra.run.dir=experiments/guidance/run
python experiments/guidance/header_memory.py experiments/guidance/run \
  > experiments/guidance/results/header_memory.txt
