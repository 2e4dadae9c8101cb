"""Object storage (S3, GCS, Azure) as an :class:`~featurekit.storage.objectstore.ObjectStore`.

The only module that imports ``obstore``. obstore wraps the same Rust ``object_store`` crate
that delta-rs uses, so one ``storage_options`` mapping configures both the registry (here)
and the Delta tables (:mod:`featurekit.storage.delta`), with the same option names
(``aws_access_key_id``, ``aws_endpoint``, ``aws_allow_http``, ``google_service_account``,
``azure_storage_account_key``, ...).

Create-only writes are ``PutMode.Create``: a conditional PUT (S3 ``If-None-Match: *``, GCS
``ifGenerationMatch=0``, Azure ``If-None-Match: *``), which the service refuses with 412
when the key exists. That single primitive is what keeps racing writers on different
machines from overwriting each other, so :func:`open_remote` can probe it
(:func:`probe_create_only`) before anything is written.

Every message this module raises is passed through :func:`~featurekit.core.redact.redact`
with the option values as known secrets: an error from the service can quote a signed URL
or an endpoint with credentials.

Example:
    >>> objects = open_remote("s3://bucket/features", {"aws_region": "eu-west-1"})
    >>> objects.write_if_absent("_featurekit/views/trips/v1.json", b"{}")
    True
"""

from __future__ import annotations

import builtins
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from featurekit.core.errors import StorageError
from featurekit.core.redact import MASK, redact, redact_options, redact_url
from featurekit.storage.objectstore import ObjectInfo, ObjectStore

#: URI schemes a store root may use besides local paths.
REMOTE_SCHEMES = ("s3", "s3a", "gs", "az", "azure", "abfs", "abfss")

# object_store's HTTP client settings: obstore takes them apart from the service's own
# options; delta-rs accepts them mixed in (with or without the service prefix)
_CLIENT_OPTIONS = frozenset(
    {
        "allow_http",
        "allow_invalid_certificates",
        "connect_timeout",
        "default_content_type",
        "http1_only",
        "http2_keep_alive_interval",
        "http2_keep_alive_timeout",
        "http2_keep_alive_while_idle",
        "http2_only",
        "pool_idle_timeout",
        "pool_max_idle_per_host",
        "proxy_url",
        "proxy_ca_certificate",
        "proxy_excludes",
        "timeout",
        "user_agent",
    }
)
# options only delta-rs understands (its commit coordination); obstore rejects them
_DELTA_ONLY_OPTIONS = frozenset(
    {
        "aws_s3_allow_unsafe_rename",
        "aws_s3_locking_provider",
        "delta_dynamo_table_name",
        "aws_s3_pool_idle_timeout",
        "aws_sts_pool_idle_timeout",
        "aws_s3_get_internal_pool_idle_timeout",
        "max_retries",
        "retry_timeout",
        "mount_allow_unsafe_rename",
    }
)
_PREFIXES = ("aws_", "google_", "azure_")


#: storage_options of every remote store root opened in this process, by root URI: a
#: table under a root is opened with its root's options even where a caller has none
_ROOT_OPTIONS: dict[str, dict[str, str]] = {}


def remember_options(root: str, options: Mapping[str, str]) -> None:
    """Use ``options`` for every location under ``root`` opened without options of its own."""
    if options:
        _ROOT_OPTIONS[root.rstrip("/") + "/"] = {k: str(v) for k, v in options.items()}


def options_for(uri: str) -> dict[str, str] | None:
    """The options of the longest remembered root ``uri`` is under (None: none is)."""
    if not is_remote(uri):
        return None
    roots = [r for r in _ROOT_OPTIONS if uri.startswith(r) or uri.rstrip("/") + "/" == r]
    return dict(_ROOT_OPTIONS[max(roots, key=len)]) if roots else None


def is_remote(root: str) -> bool:
    """True when ``root`` is an object-storage URI (``s3://``, ``gs://``, ``az://``, ...)."""
    scheme, sep, _ = root.partition("://")
    return bool(sep) and scheme.lower() in REMOTE_SCHEMES


def split_options(options: Mapping[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """``storage_options`` as obstore wants them: (service config, HTTP client options)."""
    config: dict[str, str] = {}
    client: dict[str, str] = {}
    for name, value in options.items():
        lowered = name.lower()
        if lowered in _DELTA_ONLY_OPTIONS:
            continue
        bare = next((lowered[len(p) :] for p in _PREFIXES if lowered.startswith(p)), lowered)
        if bare in _CLIENT_OPTIONS:
            client[bare] = str(value)
        else:
            config[lowered] = str(value)
    return config, client


def secret_values(options: Mapping[str, str]) -> list[str]:
    """The option values that must never be shown (all but known harmless ones)."""
    shown = redact_options(options)
    return [str(value) for name, value in options.items() if shown[name] == MASK]


class RemoteObjectStore:
    """An :class:`ObjectStore` under a prefix of a bucket or container."""

    def __init__(self, root: str, storage_options: Mapping[str, str]) -> None:
        from obstore.store import from_url

        self.root = root.rstrip("/")
        self._secrets = secret_values(storage_options)
        config, client = split_options(storage_options)
        opener: Any = from_url  # typed per scheme; the scheme is only known at run time
        try:
            self._store: Any = opener(self.root, config=config, client_options=client)
        except BaseException as err:  # obstore panics (a BaseException) on some bad keys
            if isinstance(err, KeyboardInterrupt | SystemExit):
                raise
            raise StorageError(
                f"cannot open store root {redact_url(self.root)!r}: "
                f"{self._clean(err)} Check the URI and storage_options "
                "(names as delta-rs uses them, e.g. aws_region, aws_endpoint)."
            ) from None

    def __repr__(self) -> str:
        return f"RemoteObjectStore({redact_url(self.root)!r})"

    def _clean(self, err: BaseException) -> str:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        return redact(first, known=self._secrets)

    def _fail(self, action: str, key: str, err: BaseException) -> StorageError:
        return StorageError(
            f"{action} {key!r} under {redact_url(self.root)!r} failed: {self._clean(err)}"
        )

    def read(self, key: str) -> bytes | None:
        """The object's bytes, or None when there is no such key."""
        import obstore
        from obstore.exceptions import NotFoundError

        try:
            return bytes(obstore.get(self._store, key).bytes())
        except (NotFoundError, FileNotFoundError):
            return None
        except Exception as err:
            raise self._fail("reading", key, err) from None

    def write_if_absent(self, key: str, data: bytes) -> bool:
        """A conditional PUT: False when the service reports that the key exists."""
        import obstore
        from obstore.exceptions import AlreadyExistsError, PreconditionError

        try:
            obstore.put(self._store, key, data, mode="create")
        except (AlreadyExistsError, PreconditionError):
            return False
        except Exception as err:
            raise self._fail("writing", key, err) from None
        return True

    def list(self, prefix: str) -> list[str]:
        """Every key under ``prefix``, sorted."""
        return [info.key for info in self.list_info(prefix)]

    def list_info(self, prefix: str) -> builtins.list[ObjectInfo]:
        """Every object under ``prefix`` with its size and modification time, by key."""
        import obstore

        base = prefix.rstrip("/")
        try:
            found = [
                ObjectInfo(str(meta["path"]), int(meta["size"]), _utc(meta["last_modified"]))
                for batch in obstore.list(self._store, base or None)
                for meta in batch
            ]
        except Exception as err:
            raise self._fail("listing", prefix, err) from None
        return sorted(found, key=lambda info: info.key)

    def exists(self, key: str) -> bool:
        """True when ``key`` holds an object."""
        import obstore
        from obstore.exceptions import NotFoundError

        try:
            obstore.head(self._store, key)
        except (NotFoundError, FileNotFoundError):
            return False
        except Exception as err:
            raise self._fail("checking", key, err) from None
        return True

    def delete(self, key: str) -> None:
        """Remove ``key`` (object stores treat a missing key as deleted)."""
        import obstore
        from obstore.exceptions import NotFoundError

        try:
            obstore.delete(self._store, key)
        except (NotFoundError, FileNotFoundError):
            return
        except Exception as err:
            raise self._fail("deleting", key, err) from None

    def rename(self, key: str, new_key: str) -> None:
        """Move ``key`` to ``new_key`` (object stores copy, then delete the original)."""
        import obstore

        try:
            obstore.rename(self._store, key, new_key)
        except Exception as err:
            raise self._fail("renaming", key, err) from None


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def probe_create_only(objects: ObjectStore, prefix: str) -> bool:
    """Whether ``objects`` honours create-only writes: write one sentinel twice.

    The second write must be refused. Some S3-compatible servers ignore ``If-None-Match``
    and overwrite silently; on them two machines could both "create" the same registry
    record, so the caller refuses to write. The sentinel is removed afterwards.
    """
    key = f"{prefix}probe-{uuid.uuid4().hex}"
    try:
        first = objects.write_if_absent(key, b"1")
        second = objects.write_if_absent(key, b"2")
    finally:
        objects.delete(key)
    return first and not second
