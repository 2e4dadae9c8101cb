"""Settings and constants shared by every layer."""

from __future__ import annotations

#: The package version (also ``featurekit.__version__``); read from here so a source
#: checkout reports it without installed package metadata.
__version__ = "0.1.0"

#: Bumped when the fingerprint recipe or the on-disk layout changes incompatibly.
#: It is part of every fingerprint, so a recipe change can never alias old versions.
FORMAT_VERSION = 1

#: Name of the registry folder under a store root.
REGISTRY_DIR = "_featurekit"

#: Internal column names; the ``__fk_`` prefix is reserved.
RESERVED_PREFIX = "__fk_"
