"""The bottom layer: errors, settings, time, names, hashing, definitions and the decorators.

Pure model, no I/O; every other layer may import it, and it imports none of them
(notebook displays reach it through :mod:`featurekit.core.display`). See docs/architecture.md.
"""
