"""Helpers shared by the test modules (and the bench's service runner): plain functions and
classes, no fixtures. Fixtures live in the conftest.py files, built on these."""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
