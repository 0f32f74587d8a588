# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # A tour of seqgen from Python
#
# Train a tiny model, generate with three decoders, score a text, plot a metric. Runs as a
# plain script (`MPLBACKEND=Agg python examples/tour.py`, about a minute on a 2-core CPU with
# a cold cache) or, opened with jupytext, as a notebook. Offline: the data is a synthetic
# DPFSA language. Set `SEQGEN_CACHE` to keep the trained model somewhere else than
# `~/.cache/seqgen`; `TOUR_OUT` to choose where the run and the plot go.

# %%
import os
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

import seqgen
from seqgen.metrics import compute

out = Path(os.environ.get("TOUR_OUT") or tempfile.mkdtemp(prefix="seqgen-tour-"))

# %% [markdown]
# ## Train a tiny model
# `seqgen.run` takes the command line's overrides (`python -m seqgen.run ...`) and returns the
# results; the model is trained once and then comes from the cache.

# %%
overrides = [
    "data=synthetic",  # strings of a small random automaton (DPFSA): exact log-probs known
    "model.hidden_size=32",
    "model.num_layers=1",
    "train=tiny",
    "decoder=greedy",
    "decode.prompts=none",  # the run's own decode: from the empty start
    "decode.num_samples=8",
    "decode.max_len=24",
    "output.plots=false",
]
res = seqgen.run(overrides, out_dir=out / "run")
print({k: round(v, 3) for k, v in res["metrics"].items()})

# %% [markdown]
# ## Generate with three decoders
# `seqgen.load` takes a run dir (or a model-cache entry); `generate` takes any decoder and
# its knobs, and returns texts, token ids, scores and per-token log-probs.

# %%
model = seqgen.load(res["out_dir"])
held_out = [model.vocab.decode(s) for s in model.corpus.test]  # strings the model never saw
prompt = held_out[0][:2]  # a prefix the language allows
outputs = {
    "greedy": model.generate(prompt, decoder="greedy"),
    "beam 4": model.generate(prompt, decoder="beam", beam_size=4),
    "nucleus 0.9": model.generate(prompt, decoder="sample", top_p=0.9, num_samples=8, seed=0),
}
for name, gen in outputs.items():
    print(f"{name:12s} {gen.texts[0]!r:24s} log-prob {gen.logprobs[0]:.2f}")

# %% [markdown]
# ## Score a text
# Teacher-forced per-token log-probs, the sequence log-prob (EOS included) and perplexity.
# Scoring a generation gives back the log-probs its decoder reported.

# %%
scored = model.score([held_out[1]])
print("log-prob", scored.logprobs[0], "perplexity", scored.perplexity[0])
gen = outputs["nucleus 0.9"]
again = model.score(gen.token_ids, prompts=gen.prompts, ended=list(gen.ended))
print("same log-probs as the decoder:", np.allclose(again.logprobs, gen.logprobs, atol=1e-5))

# %% [markdown]
# ## Register a custom processor
# (This cell is written once `seqgen.decoding.register_processor` is in place.)

# %%
# CUSTOM PROCESSOR CELL: left for `seqgen.decoding.register_processor`

# %% [markdown]
# ## Plot a metric
# Each generation carries the bundle the metric table scores (`seqgen.metrics.compute`): the
# metrics a run reports, here each decoder's generation perplexity and distinct-2.

# %%
metrics = {name: compute(gen.generations) for name, gen in outputs.items()}
fig, axes = plt.subplots(1, 2, figsize=(8, 3))
for ax, key in zip(axes, ("gen/ppl", "diversity/distinct_2")):
    ax.bar(list(metrics), [m[key] for m in metrics.values()])
    ax.set_title(key)
axes[0].set_ylabel("per token")
axes[1].set_ylabel("distinct bigrams / bigrams")
fig.tight_layout()
fig.savefig(out / "tour.png")
print("plot:", out / "tour.png", {n: round(m["gen/ppl"], 3) for n, m in metrics.items()})
