"""The training-set manifest: what a training set was built from, as one typed record.

A manifest is written once, when the set is first built, to
``<root>/training_sets/<id>/manifest.json`` and read back to rebuild, explain, display or
trace the set. :meth:`Manifest.to_json` and :func:`parse_manifest` define that file's JSON
shape, here and nowhere else; the registry only moves the bytes.

Format versions:

1. the first shape; view entries did not record their output column names.
2. each view entry records ``columns``, its output column per feature. Reading a version-1
   manifest derives them with the naming rule of that time (``feature``, or
   ``view__feature`` on a clash), which is the rule its training set was built with.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from featurekit.core.errors import StorageError
from featurekit.core.hashing import Algorithm

__all__ = [
    "MANIFEST_FORMAT",
    "LabelsInfo",
    "Manifest",
    "ManifestView",
    "OnDemandEntry",
    "parse_manifest",
]

#: The manifest format this featurekit writes (and the newest it reads). Format 3 names
#: the digest of its result hash (``result_hash_algorithm``); older ones used SHA-256.
MANIFEST_FORMAT = 3


class LabelsInfo(BaseModel):
    """The labels a training set was built on (stored beside the manifest as Delta)."""

    model_config = ConfigDict(frozen=True, populate_by_name=True)

    hash: str
    rows: int
    columns: list[str]
    timestamp: str
    #: base64 of the labels' serialized Arrow schema (restores dtypes and time zones)
    arrow_schema: str = Field(alias="schema")


class ManifestView(BaseModel):
    """One view version a training set read, pinned to one Delta version of its table."""

    model_config = ConfigDict(frozen=True)

    view: str
    version: int
    fingerprint: str
    #: the view version's table, relative to the store root
    table: str
    #: the Delta version read (None: the table had no commit yet at ``as_of``)
    delta_version: int | None
    keys: list[str]
    timestamp: str
    created_timestamp: str | None
    features: list[str]
    ttl_us: int | None
    #: output column of each feature, in ``features`` order
    columns: list[str] = []

    @property
    def ref(self) -> str:
        """``view@version``, as lineage and displays name it."""
        return f"{self.view}@{self.version}"


class OnDemandEntry(BaseModel):
    """One on-demand feature version applied to the joined frame."""

    model_config = ConfigDict(frozen=True)

    name: str
    version: int
    fingerprint: str
    #: (argument name the function sees, frame column it reads)
    inputs: list[tuple[str, str]]
    outputs: list[str]
    #: helper columns dropped after the last step (inputs nobody asked for)
    drop: list[str] = []


class Manifest(BaseModel):
    """Everything that defines a training set, and the hash of what it produced.

    Example:
        >>> ts.manifest.views[0].delta_version, ts.manifest.result_hash[:16]
    """

    model_config = ConfigDict(frozen=True)

    id: str
    format_version: int = MANIFEST_FORMAT
    created_at: datetime
    labels: LabelsInfo
    views: list[ManifestView]
    #: output columns after the label columns (features, then on-demand outputs)
    columns: list[str]
    point_in_time: Literal["knowledge", "event"]
    as_of: datetime | None
    result_hash: str
    #: the digest ``result_hash`` was read with (see :mod:`featurekit.core.hashing`)
    result_hash_algorithm: Algorithm = "sha256"
    result_rows: int
    library_versions: dict[str, str]
    on_demand: list[OnDemandEntry] = []

    @model_validator(mode="before")
    @classmethod
    def _upgrade(cls, data: Any) -> Any:
        """Version-1 manifests: derive each view's output columns by the rule of that time."""
        if not isinstance(data, dict) or int(data.get("format_version", MANIFEST_FORMAT)) >= 2:
            return data
        views = data.get("views") or []
        if all(isinstance(v, dict) and v.get("columns") for v in views):
            return data
        counts = Counter(f for v in views for f in v.get("features", []))
        taken = set((data.get("labels") or {}).get("columns") or [])
        upgraded = [
            {
                **v,
                "columns": [
                    f"{v['view']}__{f}" if counts[f] > 1 or f in taken else f
                    for f in v.get("features", [])
                ],
            }
            for v in views
        ]
        return {**data, "views": upgraded}

    def feature_columns(self) -> list[tuple[ManifestView, str, str]]:
        """(view entry, feature, output column) for every view feature, in join order."""
        return [(v, f, c) for v in self.views for f, c in zip(v.features, v.columns, strict=True)]

    def to_json(self) -> dict[str, Any]:
        """The JSON object written to ``manifest.json``."""
        data = self.model_dump(mode="json", by_alias=True)
        if not self.on_demand:  # absent, as before on-demand features existed
            del data["on_demand"]
        return data


def parse_manifest(data: Any, where: str) -> Manifest:
    """Validate the JSON of one ``manifest.json`` (``where`` names it in errors).

    Raises:
        StorageError: it is not a manifest, or was written by a newer featurekit.
    """
    if not isinstance(data, dict):
        raise StorageError(f"training-set manifest {where!r} is not a JSON object.")
    found = int(data.get("format_version", 1) or 1)
    if found > MANIFEST_FORMAT:
        raise StorageError(
            f"training-set manifest {where!r} was written by a newer featurekit (format "
            f"{found}, this one reads up to {MANIFEST_FORMAT}); upgrade featurekit."
        )
    try:
        return Manifest.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        raise StorageError(
            f"training-set manifest {where!r} is damaged: {err.error_count()} invalid "
            f"field(s), first {'.'.join(str(p) for p in first['loc'])}: {first['msg']}."
        ) from err
