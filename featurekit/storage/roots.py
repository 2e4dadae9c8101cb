"""Store roots as people type them: a folder or an object-storage URI, and its options.

The Python API, the command line, ``featurekit serve`` and project files all accept the
same roots (``./store``, ``/data/features``, ``s3://bucket/prefix``, ``gs://…``,
``az://…``), so one parser turns the text into what the storage layer opens: an absolute
:class:`~pathlib.Path` for a folder, the URI (without a trailing ``/``) for object storage.

Credentials never go on a command line (shells keep history and ``ps`` shows arguments), so
a root opened without explicit ``storage_options`` takes them from the environment:
:data:`OPTIONS_ENV` holds a JSON object of delta-rs/object_store option names, and when it
is unset the backends fall back to their usual variables and credential chains
(``AWS_*``, instance profiles, ``GOOGLE_APPLICATION_CREDENTIALS``, ...).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import orjson

from featurekit.core.errors import DefinitionError, StorageError
from featurekit.core.redact import redact_url
from featurekit.storage.remote import REMOTE_SCHEMES, is_remote

__all__ = ["OPTIONS_ENV", "options_for_root", "options_from_env", "parse_root"]

#: environment variable holding a root's ``storage_options`` as a JSON object
OPTIONS_ENV = "FEATUREKIT_STORAGE_OPTIONS"


def parse_root(root: str | Path, *, base: Path | None = None) -> Path | str:
    """A folder as an absolute Path (relative ones against ``base``), a URI as a string.

    Raises:
        StorageError: ``root`` is a URI whose scheme is neither ``file://`` nor object storage.
    """
    text = str(root)
    if is_remote(text):
        return text.rstrip("/")
    if "://" in text and not text.startswith("file://"):
        scheme = text.split("://", 1)[0]
        raise StorageError(
            f"store root {redact_url(text)!r}: scheme {scheme!r} is not supported; use a local "
            f"folder or one of {', '.join(s + '://' for s in REMOTE_SCHEMES)}."
        )
    path = Path(text.removeprefix("file://")).expanduser()
    if base is not None and not path.is_absolute():
        path = base / path
    return path.resolve()


def options_from_env() -> dict[str, str]:
    """The ``storage_options`` that :data:`OPTIONS_ENV` holds ({} when unset or blank).

    Raises:
        DefinitionError: the variable is not a JSON object of option names to scalars. The
            message never repeats the value: it may hold a secret key.
    """
    text = os.environ.get(OPTIONS_ENV, "").strip()
    if not text:
        return {}
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        value = None
    if not isinstance(value, dict) or not all(
        isinstance(v, str | int | float | bool) for v in value.values()
    ):
        raise DefinitionError(
            f"{OPTIONS_ENV} must be a JSON object of storage option names to values, e.g. "
            '{"aws_region": "eu-west-1", "aws_endpoint": "http://127.0.0.1:9000"} '
            "(its value is not shown: it may hold credentials)."
        )
    return {str(k): _option_text(v) for k, v in value.items()}


def options_for_root(root: Path | str, given: Mapping[str, str] | None) -> dict[str, str]:
    """The options a root is opened with: ``given`` when passed, else :data:`OPTIONS_ENV`'s.

    A local folder needs none, so the variable is only read for object-storage roots.
    """
    if given is not None:
        return dict(given)
    return options_from_env() if isinstance(root, str) else {}


def _option_text(value: str | int | float | bool) -> str:
    if isinstance(value, bool):  # object_store spells booleans in lower case
        return "true" if value else "false"
    return str(value)
