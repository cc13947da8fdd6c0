"""Database access: the engine, the archive tables, fixtures and the embedded server."""
