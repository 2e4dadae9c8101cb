"""The one validator for names that can reach a path, a table name or a registry key.

Every entry point (Python API, CLI, HTTP) passes user-supplied names through
:func:`validate_name` before they are joined onto anything, so ``../x``, ``a/b``, empty
strings, absurd lengths and control characters are refused in one place, with one message.

Two shapes exist:

- identifiers (views, entities, sources, features, services, models, on-demand features):
  letters, digits and underscores, starting with a letter or underscore; they double as
  SQL table and column names.
- labels (saved training-set names, training-set ids, run ids, lineage record keys, API key
  names): letters, digits, ``_``, ``-`` and ``.``, starting with a letter, digit or
  underscore (so never ``.`` or ``..``).

Both are at most :data:`MAX_NAME_LENGTH` characters and may not use the reserved ``__fk_``
prefix.

Example:
    >>> validate_name("driver_stats", "view")
    'driver_stats'
"""

from __future__ import annotations

import re
from typing import Literal

from featurekit.core.config import RESERVED_PREFIX
from featurekit.core.errors import DefinitionError

NameKind = Literal[
    "entity",
    "source",
    "view",
    "feature",
    "service",
    "model",
    "on-demand feature",
    "training set",
    "training set id",
    "run",
    "lineage record",
    "check",
    "API key",
]

#: Longest accepted name; longer ones are refused without being echoed whole.
MAX_NAME_LENGTH = 128

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_LABEL = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*\Z")
_LABEL_KINDS = frozenset({"training set", "training set id", "run", "lineage record", "API key"})


def shown(value: object, limit: int = 60) -> str:
    """``repr`` of a user value, cut to ``limit`` characters so errors never echo megabytes."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 3]}...' ({len(text)} characters)"


def is_valid_name(name: object, kind: NameKind) -> bool:
    """True when :func:`validate_name` would accept ``name`` for ``kind``."""
    if not isinstance(name, str) or not 0 < len(name) <= MAX_NAME_LENGTH:
        return False
    if name.startswith(RESERVED_PREFIX):
        return False
    pattern = _LABEL if kind in _LABEL_KINDS else _IDENTIFIER
    return pattern.match(name) is not None


def validate_name(name: object, kind: NameKind) -> str:
    """Return ``name`` if it is a valid ``kind`` name, else raise :class:`DefinitionError`.

    The message shows at most a short prefix of the offending value.
    """
    if is_valid_name(name, kind):
        return name  # type: ignore[return-value]
    if kind in _LABEL_KINDS:
        rule = "letters, digits, '_', '-' and '.', starting with a letter, digit or '_'"
    else:
        rule = "letters, digits and underscores, starting with a letter or '_'"
    what = kind if kind.endswith(" id") else f"{kind} name"
    raise DefinitionError(
        f"{what} {shown(name)} is not valid: use {rule}, at most {MAX_NAME_LENGTH} "
        f"characters (and not the reserved prefix {RESERVED_PREFIX!r})."
    )
