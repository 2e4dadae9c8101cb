"""The typed records the registry keeps: one version of a view, service, on-demand feature
or model.

Each is a frozen pydantic model with a ``format_version``; :class:`~featurekit.storage.
registry.Registry` is the one place that reads and writes them. Fields only ever get
added with defaults, so records written by any earlier featurekit of the same format (1)
still read, and an older featurekit reading a newer record of format 1 ignores what it
does not know. A record of a newer format is refused by the registry, never guessed at.

What used to be read out of fingerprint internals is a field now: a view version's
:attr:`VersionRecord.output` dtypes (every stored column) and its
:attr:`VersionRecord.aggregations` (the same :class:`~featurekit.core.definitions.
Aggregation` objects a view is defined with; stored in their canonical ``spec()`` form).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, field_serializer, field_validator, model_validator

from featurekit.core import display
from featurekit.core.config import FORMAT_VERSION
from featurekit.core.definitions import Aggregation

__all__ = [
    "DeletedTable",
    "DeletionEvent",
    "ModelRecord",
    "OnDemandRecord",
    "Record",
    "ServiceRecord",
    "VersionRecord",
]


class Record(BaseModel):
    """What every registry record has: a version number and the format it was written in."""

    model_config = ConfigDict(frozen=True)

    version: int
    format_version: int = FORMAT_VERSION


class VersionRecord(Record):
    """One version of one view, as the registry keeps it.

    Attributes:
        features: feature name -> dtype (for aggregation views: the aggregates).
        output: dtype of every stored column (keys, timestamps, features or event columns).
        aggregations: aggregation views only: the aggregates, as defined.
        event_columns: aggregation views only: the event columns stored for them.
        parts: what entered the fingerprint (for "why did it change"; not a schema).
        buckets: how many buckets of entity keys the version's table was first written
            with (1: not bucketed). ``featurekit optimize --buckets N`` and full runs may
            re-bucket the table later; each Delta version of the table records its own
            count, which is what reads go by (see :mod:`featurekit.kernels.bucketing`).
    """

    view: str
    fingerprint: str
    created_at: datetime
    reason: list[str]
    entity: str
    keys: list[str]
    timestamp: str
    created_timestamp: str | None
    features: dict[str, str]
    ttl_us: int | None
    parts: dict[str, Any]
    output: dict[str, str] = {}
    description: str = ""
    tags: dict[str, str] = {}
    aggregations: list[Aggregation] = []
    event_columns: list[str] = []
    #: created-time columns of the view's inputs that its output does not carry as its
    #: knowledge time; with ``created_timestamp`` None, the rows have no knowledge time
    #: at all and the training sets' guard against late-arriving values cannot apply
    knowledge_time_dropped: list[str] = []
    #: leakage lint findings (with their fix) when the version was recorded; empty for a
    #: view declared with ``leakage="ignore"``
    leakage: list[str] = []
    buckets: int = 1

    @model_validator(mode="before")
    @classmethod
    def _output_of_older_records(cls, data: Any) -> Any:
        # records written before ``output`` was a field kept it in the fingerprint parts
        if isinstance(data, dict) and "output" not in data:
            parts = data.get("parts") or {}
            output = (parts.get("source_schema") or {}).get("output") or {}
            data = {**data, "output": output}
        return data

    @field_validator("aggregations", mode="before")
    @classmethod
    def _aggregations_from_specs(cls, value: Any) -> Any:
        if not isinstance(value, list):
            return value
        return [_aggregation(item) for item in value]

    @field_serializer("aggregations")
    def _aggregations_as_specs(self, value: list[Aggregation]) -> list[dict[str, object]]:
        return [a.spec() for a in value]

    def _repr_html_(self) -> str | None:
        return display.html_for(self)


def _aggregation(item: Any) -> Any:
    """An :class:`Aggregation` from its stored ``spec()`` form (``window_us``)."""
    if not isinstance(item, dict) or "window_us" not in item:
        return item
    micros = item["window_us"]
    return Aggregation.model_validate(
        {
            "column": item["column"],
            "function": item["function"],
            "window": None if micros is None else timedelta(microseconds=int(micros)),
            "name": item["name"],
        }
    )


class ServiceRecord(Record):
    """One version of a feature service: its feature references, pinned as registered.

    Attributes:
        features: ``"view@N:feature"``, ``"view:feature"`` or ``"on_demand:*"`` strings.
        hash: digest of ``features``; re-registering the same list is a no-op.
    """

    name: str
    hash: str
    features: list[str]
    description: str = ""
    created_at: datetime


class OnDemandRecord(Record):
    """One version of an on-demand feature, as the registry keeps it.

    Attributes:
        inputs: pinned inputs, ``"view@N:feature"``.
        request: request columns it reads.
        outputs: the columns it returns.
        parts: what entered the fingerprint (its code fingerprint is ``parts["code"]``).
    """

    name: str
    fingerprint: str
    inputs: list[str]
    request: list[str]
    outputs: list[str]
    parts: dict[str, Any]
    created_at: datetime

    @property
    def code(self) -> str:
        """The code fingerprint of the function this version was registered with."""
        return str(self.parts.get("code", ""))


class CodeSourceRecord(BaseModel):
    """The normalized source kept for one code fingerprint of a view or on-demand feature,
    so ``featurekit plan`` can diff a later change against it (write-once, never versioned).
    """

    model_config = ConfigDict(frozen=True)

    kind: str
    name: str
    code_fingerprint: str
    source: str
    format_version: int = FORMAT_VERSION


class ModelRecord(Record):
    """One logged model version.

    Example:
        >>> entry = store.log_model("churn", training_set=ts, model=clf, metrics={"auc": 0.91})
        >>> entry.version, entry.training_set
    """

    name: str
    training_set: str
    created_at: datetime
    metrics: dict[str, float] = {}
    params: dict[str, Any] = {}
    model: dict[str, Any] = {}
    mlflow_run_id: str | None = None
    description: str = ""
    tags: dict[str, str] = {}

    @property
    def id(self) -> str:
        """Lineage node id, ``model:<name>@<version>``."""
        return f"model:{self.name}@{self.version}"

    def _repr_html_(self) -> str | None:
        return display.html_for(self)


class DeletedTable(BaseModel):
    """What one deletion did to one view version's table.

    Attributes:
        table: the table's key under the store root.
        rows_deleted: rows the Delta delete removed from the latest version.
        delta_version: the Delta version the delete committed (None: nothing to delete).
        affected_versions: every earlier Delta version whose files held deleted rows (a
            training set pinned to one of them can no longer be rebuilt).
        files: data files (relative to the table) that held deleted rows; vacuum removes
            them whatever their age and whoever pins them.
        online_keys_removed: deleted keys that had an online entry.
    """

    model_config = ConfigDict(frozen=True)

    view: str
    version: int
    table: str
    rows_deleted: int
    delta_version: int | None
    affected_versions: list[int]
    files: list[str]
    online_keys_removed: int = 0


class DeletionEvent(BaseModel):
    """A deletion on request: who, when, why, and how much per table; never the key values.

    The keys are kept only as ``keys_hash``, a SHA-256 of the sorted keys with a random
    per-event ``salt``: whoever holds the keys can prove they were the ones deleted, nobody
    can read them back.
    """

    model_config = ConfigDict(frozen=True)

    id: str
    created_at: datetime
    by: str
    reason: str
    entity: str
    key_columns: list[str]
    key_count: int
    salt: str
    keys_hash: str
    tables: list[DeletedTable]
    format_version: int = FORMAT_VERSION
