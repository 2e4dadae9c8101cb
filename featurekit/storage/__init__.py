"""I/O: reading sources, Delta tables and the registry. deltalake is used only here."""
