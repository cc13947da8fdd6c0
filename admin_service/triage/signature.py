"""The error signature: an error message with its variable parts (timestamps, uuids, quoted
values, paths, hex ids, numbers) replaced by placeholders, so that "timeout after 30012 ms on
job 4f3a..." and "timeout after 29987 ms on job 9ab1..." are one group.

The rules are defined once, here, and rendered into one SQL expression: grouping and the list
filter both run in PostgreSQL, never over rows in Python. Leaf module (SQLAlchemy only)."""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import func, literal
from sqlalchemy.sql.elements import ColumnElement

# Longest signature kept (a stack trace is grouped by its first lines); also the longest
# value the list's `signature` filter takes.
SIGNATURE_MAX = 240
# The signature of a job without an error message (NULL or blank).
NO_MESSAGE = "<none>"

# A token never starts inside a word: `\m` (a word's start) for tokens that begin with a word
# character; quoted values and paths capture the character before them (or the start) and put
# it back. So text between tokens is never changed, and the part of a signature before its
# first placeholder is in every raw message of its group (signature_fragments relies on that).
# Letter cases are spelled out ([0-9a-fA-F]) rather than matched case-insensitively: the `i`
# flag made every rule about half as fast again.
_BEFORE = "(^|[^[:alnum:]_])"
_HEX = "[0-9a-fA-F]"

# (what it stands for, PostgreSQL ARE pattern, replacement); applied in this order, each to
# the result of the one before.
RULES: tuple[tuple[str, str, str], ...] = (
    (
        "ISO-8601 timestamps (date, time, fraction, zone)",
        r"\m\d{4}-\d{2}-\d{2}([Tt ]\d{2}:\d{2}(:\d{2}([.,]\d+)?)?([zZ]|[+-]\d{2}(:?\d{2})?)?)?",
        "<ts>",
    ),
    ("uuids", rf"\m{_HEX}{{8}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{12}}\M", "<uuid>"),
    ("quoted values ('...', \"...\", `...`)", _BEFORE + "('[^']*'|\"[^\"]*\"|`[^`]*`)", r"\1<str>"),
    (
        "paths and URLs (/a/b, ./a, ~/a, C:\\a, scheme://...)",
        r"(^|[\s=(\[:,])([a-zA-Z][a-zA-Z0-9+.-]*://|[a-zA-Z]:\\|~/|\.{1,2}/|/)[^\s'\",;)\]]*",
        r"\1<path>",
    ),
    (
        "hex ids (0x..., or 8+ hex digits with a letter and a digit)",
        rf"\m(0[xX]{_HEX}+|(?=[0-9]*[a-fA-F])(?=[a-fA-F]*[0-9]){_HEX}{{8,}})\M",
        "<hex>",
    ),
    ("numbers (integers, decimals)", r"\m\d+([.,]\d+)*", "<num>"),
)


def signature_sql(message: ColumnElement[Any]) -> ColumnElement[str]:
    """The SQL expression of the signature of `message` (a text column or expression)."""
    expr: ColumnElement[Any] = message
    for _, pattern, replacement in RULES:
        expr = func.regexp_replace(expr, literal(pattern), literal(replacement), literal("g"))
    # Runs of white space are one space, so line breaks and padding do not split a group.
    expr = func.btrim(func.regexp_replace(expr, literal(r"\s+"), literal(" "), literal("g")))
    # NULL or blank: NO_MESSAGE (nullif evaluates the chain once).
    return func.coalesce(func.nullif(func.left(expr, SIGNATURE_MAX), literal("")), literal(NO_MESSAGE))


# The placeholders the rules write (a message may hold the same text itself: it is then left out).
PLACEHOLDERS = re.compile(r"<(?:ts|uuid|str|path|hex|num)>")
MAX_FRAGMENTS = 8


def signature_fragments(signature: str) -> list[str]:
    """Words every raw message of this signature contains: the rules never change the text
    between tokens (runs of white space are folded, so words, not phrases), longest first.
    Cheap strpos() tests that spare the regular expressions on most rows when the list is
    filtered by signature."""
    if signature == NO_MESSAGE:
        return []
    words = {word for piece in PLACEHOLDERS.split(signature) for word in piece.split()}
    return sorted(words, key=lambda w: (-len(w), w))[:MAX_FRAGMENTS]
