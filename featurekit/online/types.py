"""The shapes every online store reads in and out, shared by the stores and the lookups.

They live apart from :mod:`featurekit.online.stores` so that the Redis store, which that
module opens for a ``redis://`` URL, can use them without importing it back.
"""

from __future__ import annotations

from collections.abc import Sequence

#: One view version's part of a read: (view, version, encoded keys).
ReadRequest = tuple[str, int, Sequence[bytes]]
#: What a read returns per view version: (snapshot id, metadata, values aligned with keys),
#: or (None, None, []) when the view version has no snapshot.
ReadResult = tuple[str | None, bytes | None, list[bytes | None]]
