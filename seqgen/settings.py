"""`setting(node, name, default)`: one field of a config node, or its default.

The one helper behind `seqgen.config.setting`, the decoders' `decoding.common.get` and the
data loaders: a partial config (a test's dict, a script's namespace, a notebook's dataclass)
leaves fields out, and each takes its schema's default. It imports nothing of seqgen, so the
decoders can use it without importing the config schemas.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def setting(node: Any, name: str, default: Any) -> Any:
    """`node.name` of a DictConfig, mapping, dataclass or namespace; `default` where `node` is
    None or leaves the field out or None (OmegaConf allows None only where a schema's type
    is optional, and there the default is None too)."""
    if node is None:
        return default
    try:
        value = node.get(name) if isinstance(node, Mapping) else getattr(node, name)
    except (AttributeError, KeyError):
        return default
    return default if value is None else value
