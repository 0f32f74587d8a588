"""User extensions from the config: `plugins=[my_ext.py, mypkg.ext]` imports each entry before
the config is validated, so the processors, decoders, metrics and models it registers
(`register_processor`, `register_decoder`, `register_metric`, `register_model`) are accepted by
`python -m seqgen.run`, its multirun jobs (in other processes too), `seqgen.run(overrides)`,
and `seqgen.load(path)`, `seqgen-sample` and `seqgen-score` (a run's saved `plugins` are
imported again).

An entry is a dotted module name (on the Python path) or a path to a `.py` file (a relative
path is read from the current directory). Each is imported once per process: a file under the
module name `seqgen_plugin_<hash of its resolved path>`, a module under its own name, so a
second import (the job of a sweep, `seqgen.load` after `seqgen.run`) registers nothing twice.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import os
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import ModuleType

from seqgen.errors import UserError

ALLOWED = "a dotted module name on the Python path or a path to a .py file"

# The entries imported in this process (a file by its resolved path), in order.
IMPORTED: list[str] = []
# The command line hands them to the jobs a launcher runs in other processes (joblib, submitit:
# they inherit the environment): `seqgen.config` imports them when it is imported there, before
# Hydra unpickles the job's config and ConfigStore (which name `seqgen.config.DecoderConfig`)
# and composes the job's config with the plugins' knobs and decoders.
ENV = "SEQGEN_PLUGINS"


def is_path(entry: str) -> bool:
    """Whether a plugins entry names a file (ends with .py or holds a path separator)."""
    return entry.endswith(".py") or "/" in entry or os.sep in entry


def module_name(entry: str) -> str:
    """The name an entry is imported under: a file's by its resolved path, a module's own."""
    if not is_path(entry):
        return entry
    path = str(Path(entry).expanduser().resolve())
    return "seqgen_plugin_" + hashlib.sha256(path.encode()).hexdigest()[:16]


def import_plugin(entry: str, where: str = "plugins") -> ModuleType:
    """Import one entry (once per process); a missing one or one that raises on import is one
    `UserError` line naming the entry and the error."""
    if not isinstance(entry, str) or not entry.strip():
        raise UserError(f"{where}: {entry!r} is not a plugin; allowed: {ALLOWED}")
    name = module_name(entry)
    if name in sys.modules:  # imported already: its registrations are in the tables
        return sys.modules[name]
    if is_path(entry):
        path = Path(entry).expanduser().resolve()
        if not path.is_file() or path.suffix != ".py":
            what = "is not a .py file" if path.exists() else "does not exist"
            raise UserError(f"{where}: {entry} {what}; allowed: {ALLOWED}")
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # as `import` does: dataclasses and pickle find it
        try:
            spec.loader.exec_module(module)
        except Exception as exc:  # Ctrl-C and SystemExit go on as they are
            sys.modules.pop(name, None)
            raise UserError(_failed(entry, exc, where)) from None
        IMPORTED.append(str(path))
        return module
    try:
        module = importlib.import_module(entry)
    except Exception as exc:
        raise UserError(_failed(entry, exc, where)) from None
    IMPORTED.append(entry)
    return module


def _failed(entry: str, exc: Exception, where: str) -> str:
    first = (str(exc).splitlines() or [""])[0]
    if isinstance(exc, ModuleNotFoundError) and exc.name and entry.startswith(exc.name):
        return f"{where}: no module {entry!r} ({first}); allowed: {ALLOWED}"
    return f"{where}: importing {entry} failed: {type(exc).__name__}: {first}"


def import_plugins(entries: Iterable[str] | None, where: str = "plugins") -> None:
    """Import every entry, then rebuild the config schema with the knobs and decoders they
    registered (Hydra reads it when it composes)."""
    if not entries:
        return
    from seqgen.config import register_configs

    if isinstance(entries, str) or not isinstance(entries, Sequence):  # a saved config's
        raise UserError(f"{where}={entries!r} is not a list; allowed: a list of entries, {ALLOWED}")
    for entry in entries:
        import_plugin(entry, where)
    register_configs()


def export_to_jobs() -> None:
    """Hand the plugins imported here to the processes this one starts (`ENV`)."""
    if IMPORTED:
        os.environ[ENV] = json.dumps(IMPORTED)


def import_exported() -> None:
    """Import the plugins a parent process handed over (`ENV`), if any."""
    entries = os.environ.get(ENV)
    if entries:
        import_plugins(json.loads(entries), f"{ENV} (the plugins of the command line)")
