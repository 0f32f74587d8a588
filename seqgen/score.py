"""`seqgen-score`: per-token and per-sequence log-probs and perplexity of given texts under a
model a run trained, one JSON object per text (what lm-eval's `loglikelihood` and vLLM's
`prompt_logprobs` are used for).

    seqgen-score <run dir or model-cache entry> text='M:6/8\\nK:D\\n|:dfa' text='...'
    seqgen-score <run dir> file=tunes.txt out=scores.jsonl      # one text per line
    seqgen-score <run dir> file=tunes.txt ended=false           # no EOS after each text

The scoring is the Python API's (`seqgen.load(path).score(texts)`, teacher-forced: each token
after BOS and the tokens before it, and the EOS after the text unless `ended=false`).
Each line: `text`, `token_ids`, `token_logprobs` (nats), `eos_logprob`, `logprob` (their sum),
`num_tokens` (EOS counted) and `perplexity` = exp(-logprob / num_tokens).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from seqgen.errors import UserError

_KEYS = ("text", "file", "out", "ended")


def parse_args(argv: list[str]) -> tuple[str, list[str], str | None, bool]:
    """`PATH key=value ...` -> (model path, texts, out file or None, ended)."""
    if not argv or "=" in argv[0]:
        raise UserError("give the run dir or model-cache entry first: seqgen-score PATH text=...")
    texts, out, ended = [], None, True
    for arg in argv[1:]:
        key, eq, value = arg.partition("=")
        if not eq or key not in _KEYS:
            raise UserError(f"{arg!r} is not key=value with a key of {', '.join(_KEYS)}")
        if key == "text":
            texts.append(value.replace("\\n", "\n"))
        elif key == "file":
            path = Path(value).expanduser()
            if not path.is_file():
                raise UserError(f"file={value} does not exist")
            texts += [line.replace("\\n", "\n") for line in path.read_text().splitlines() if line]
        elif key == "out":
            out = value
        elif value.lower() not in ("true", "false"):
            raise UserError(f"ended={value!r}; allowed: true, false")
        else:
            ended = value.lower() == "true"
    if not texts:
        raise UserError("nothing to score: give text=... or file=...")
    return argv[0], texts, out, ended


def score(argv: list[str]) -> list[dict[str, Any]]:
    """The JSON objects `seqgen-score ARGS` writes, one per text."""
    from seqgen.api import load

    path, texts, _, ended = parse_args(argv)
    model = load(path)
    s = model.score(texts, ended=ended)
    return [
        {
            "text": text,
            "token_ids": [
                int(i) for i in model.vocab.encode(text, unknown=model.config.data.unknown)
            ],
            "token_logprobs": [float(x) for x in s.token_logprobs[i]],
            "eos_logprob": float(s.eos_logprobs[i]),
            "logprob": float(s.logprobs[i]),
            "num_tokens": int(s.num_tokens[i]),
            "perplexity": float(s.perplexity[i]),
        }
        for i, text in enumerate(texts)
    ]


def cli() -> None:
    """The console script: JSONL to `out=` or stdout; a mistake is one line, exit status 2."""
    argv = sys.argv[1:]
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__)
        return
    try:
        rows = score(argv)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    lines = "".join(json.dumps(r) + "\n" for r in rows)
    _, _, out, _ = parse_args(argv)
    if out is None:
        sys.stdout.write(lines)
    else:
        Path(out).write_text(lines)


if __name__ == "__main__":
    cli()
