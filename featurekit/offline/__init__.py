"""Offline work on a store: run views, materialize them, plan requests, build training sets.

Reads and writes go through :mod:`featurekit.storage`; joins and aggregates are the
kernels'. See docs/architecture.md.
"""
