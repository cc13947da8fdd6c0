"""Failure triage (failed jobs grouped by error signature) and trends over a time range."""
