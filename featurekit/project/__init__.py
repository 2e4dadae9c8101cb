"""Features as code: a project's definitions, its configuration, plan, apply and scaffold.

The modules here sit at the surface layer (next to :mod:`featurekit.store` and the CLI);
``featurekit.project.definitions`` is the one the store imports, so this package's
``__init__`` imports nothing.
"""
