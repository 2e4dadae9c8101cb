"""The point-in-time join and windowed aggregates: polars in, polars out, no I/O.

They know nothing of stores, tables or the registry, so training sets, online snapshots
and the explanation of a row all run exactly the same code. See docs/architecture.md.
"""
