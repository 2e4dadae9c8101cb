"""Online serving: snapshots computed by the point-in-time kernel, stores, and lookups.

Nothing here imports Redis, FastAPI or uvicorn at module level; the Redis store is
imported when a ``redis://`` URL is opened.
"""

from featurekit.online.errors import OnlineStoreError, TooManyEntitiesError
from featurekit.online.stores import (
    MemoryOnlineStore,
    OnlineStore,
    SQLiteOnlineStore,
    open_online_store,
)

__all__ = [
    "MemoryOnlineStore",
    "OnlineStore",
    "OnlineStoreError",
    "SQLiteOnlineStore",
    "TooManyEntitiesError",
    "open_online_store",
]
