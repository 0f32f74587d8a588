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
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from seqgen.errors import UserError

_KEYS = ("text", "file", "out", "ended")


@dataclass
class ScoreArgs:
    """`seqgen-score PATH key=value ...`, parsed."""

    path: str  # a run dir or a model-cache entry
    texts: list[str] = field(default_factory=list)
    out: Path | None = None  # the JSONL file; None: stdout
    ended: bool = True  # score the EOS after each text


def parse_args(argv: list[str]) -> ScoreArgs:
    """The command line, checked (the texts read, `out=`'s folder there) before any model is
    loaded; a mistake is one `UserError` line."""
    if not argv or "=" in argv[0]:
        raise UserError("give the run dir or model-cache entry first: seqgen-score PATH text=...")
    args = ScoreArgs(argv[0])
    for arg in argv[1:]:
        key, eq, value = arg.partition("=")
        if not eq or key not in _KEYS:
            raise UserError(f"{arg!r} is not key=value with a key of {', '.join(_KEYS)}")
        if key == "text":
            args.texts.append(value.replace("\\n", "\n"))
        elif key == "file":
            args.texts += _read_texts(value)
        elif key == "out":
            args.out = Path(value).expanduser()
            if args.out.is_dir() or not args.out.parent.is_dir():
                raise UserError(f"out={value} is a folder or in no folder; allowed: a file path")
        elif value.lower() not in ("true", "false"):
            raise UserError(f"ended={value!r}; allowed: true, false")
        else:
            args.ended = value.lower() == "true"
    if not args.texts:
        raise UserError("nothing to score: give text=... or file=... (a file of non-empty lines)")
    if not args.ended and not all(args.texts):
        raise UserError("text='' with ended=false scores no token; allowed: a non-empty text")
    return args


def _read_texts(value: str) -> list[str]:
    """The non-empty lines of `file=` (`\\n` in a line is a line break)."""
    path = Path(value).expanduser()
    if not path.is_file():
        raise UserError(f"file={value} is not a file; allowed: a UTF-8 text file, one text a line")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"file={value} is not readable UTF-8 text ({exc})") from None
    return [line.replace("\\n", "\n") for line in lines if line]


def _number(x: float) -> float | None:
    """JSON has no NaN or infinity: None for them."""
    return float(x) if math.isfinite(x) else None


def score(args: ScoreArgs) -> list[dict[str, Any]]:
    """The JSON objects `seqgen-score` writes, one per text, from `Model.score`."""
    from seqgen.api import load

    s = load(args.path).score(args.texts, ended=args.ended)
    return [
        {
            "text": text,
            "token_ids": [int(i) for i in s.token_ids[i]],
            "token_logprobs": [_number(x) for x in s.token_logprobs[i]],
            "eos_logprob": _number(s.eos_logprobs[i]),
            "logprob": _number(s.logprobs[i]),
            "num_tokens": int(s.num_tokens[i]),
            "perplexity": _number(s.perplexity[i]),
        }
        for i, text in enumerate(args.texts)
    ]


def cli() -> None:
    """The console script: JSONL to `out=` or stdout; a mistake is one line, exit status 2."""
    import os

    os.environ.setdefault("WANDB_MODE", "disabled")
    argv = sys.argv[1:]
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__)
        return
    try:
        args = parse_args(argv)
        lines = "".join(json.dumps(r) + "\n" for r in score(args))
        if args.out is None:
            sys.stdout.write(lines)
        else:
            args.out.write_text(lines)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except OSError as exc:  # a full disk or a read-only place for out=
        from seqgen.errors import storage_error_message

        if storage_error_message(exc) is None:
            raise
        print(f"error: {storage_error_message(exc)}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    cli()
