"""Normalized sources of registered code, kept so a plan can show what a change changed.

A version record holds the *hash* of its code (``parts["code"]``), not the code, so a
diff between the registered version and the definition needs the old source from
somewhere. It is kept under ``<root>/_featurekit/code/<kind>/<name>/`` in one write-once
JSON record per code fingerprint: ``featurekit apply``, ``store.register`` and
``store.materialize`` write it when it is missing. Versions registered before featurekit
kept sources have none; readers get None and say so.

The source is the normalized text of what the code fingerprint hashes: the function,
the project helpers and constants it reaches (no comments, docstrings or formatting), or
the normalized SQL, or the explicit ``version=`` string.
"""

from __future__ import annotations

from featurekit.core.authoring import FeatureView
from featurekit.core.fingerprint import describe_source
from featurekit.core.hashing import stable_hash
from featurekit.core.on_demand import OnDemandFeature
from featurekit.storage.layout import RecordKind
from featurekit.storage.records import CodeSourceRecord
from featurekit.storage.registry import Registry

__all__ = ["code_source", "recorded_source", "save_source"]


def code_source(obj: FeatureView | OnDemandFeature) -> str:
    """The normalized source of a definition's code: function and helpers, SQL, or version."""
    if obj.version is not None:
        return f"# explicit version={obj.version!r}; featurekit does not read this code\n"
    if isinstance(obj, FeatureView) and obj.sql_normalized is not None:
        return obj.sql_normalized.rstrip("\n") + "\n"
    entries = describe_source(obj.fn)
    blocks = [entries.pop("<self>", "")]
    blocks.extend(_block(key, value) for key, value in entries.items())
    return "\n\n".join(b for b in blocks if b) + "\n"


def _block(key: str, value: str) -> str:
    """One reached name as a line of Python a reviewer recognises."""
    if value.startswith(("def ", "class ", "async def ", "@")):
        return value
    if value == "module:<project>":
        return f"import {key}  # a project module"
    if value.startswith("module:"):
        module = value.removeprefix("module:")
        return f"import {module}" if module == key else f"import {module} as {key}"
    return f"{key} = {value}"


def _digest(code: str) -> str:
    return stable_hash(code, 24)


def save_source(
    registry: Registry,
    kind: RecordKind,
    name: str,
    obj: FeatureView | OnDemandFeature,
    code: str | None = None,
) -> None:
    """Keep the normalized source under its code fingerprint (write-once; a no-op if kept).

    ``code`` is the code fingerprint when the caller has it (a resolved view's
    ``parts["code"]``), which saves walking the code again when the source is kept.
    """
    code = obj.code_fingerprint() if code is None else code
    if registry.code_source(kind, name, _digest(code)) is not None:
        return
    registry.add_code_source(
        kind,
        _digest(code),
        CodeSourceRecord(kind=kind, name=name, code_fingerprint=code, source=code_source(obj)),
    )


def recorded_source(registry: Registry, kind: RecordKind, name: str, code: str) -> str | None:
    """The normalized source kept for a code fingerprint, or None (stores without it)."""
    kept = registry.code_source(kind, name, _digest(code))
    return kept.source if kept is not None and kept.code_fingerprint == code else None
