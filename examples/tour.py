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

import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

import seqgen
from seqgen.decoding import Knob, register_processor
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
# A logits processor is a function `logits [R, V] -> logits [R, V]` and one row of the
# processor table: its knob (a `decoder.*` field, with a range and a neutral value at which the
# row is off and not compiled), its stage (penalty, temperature, truncation, post). Here: ban
# one token. It then runs in every decoder that samples, from Python as a knob of `generate`,
# and from the command line when this cell lives in a file of yours:
# `python -m seqgen.run plugins=[my_ext.py] decoder=sample decoder.ban_token=5`.


# %%
def ban(logits, ctx):
    """Logit -inf for the token `ban_token` (-1: off)."""
    return jnp.where(jnp.arange(logits.shape[-1]) == ctx.knobs["ban_token"], -jnp.inf, logits)


register_processor(
    "ban_token",
    ban,
    stage="penalty",
    knobs=(Knob("ban_token", int, -1, traced=True, low=-1, neutral=-1, doc="-1: off"),),
)
ids = np.concatenate(outputs["nucleus 0.9"].token_ids)
common = int(np.bincount(ids).argmax())  # the symbol nucleus sampling draws most
banned = model.generate(
    prompt, decoder="sample", top_p=0.9, num_samples=8, seed=0, ban_token=common
)
outputs[f"nucleus, no {model.vocab.decode([common])!r}"] = banned
print("banned symbol drawn:", any(common in t for t in banned.token_ids))

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
    ax.tick_params(axis="x", labelrotation=20)
axes[0].set_ylabel("per token")
axes[1].set_ylabel("distinct bigrams / bigrams")
fig.tight_layout()
fig.savefig(out / "tour.png")
print("plot:", out / "tour.png", {n: round(m["gen/ppl"], 3) for n, m in metrics.items()})
