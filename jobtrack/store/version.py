"""The schema version this jobtrack writes, in a module that imports nothing (``jobtrack status``'s fast path, #14).

``store/schema.py`` creates and upgrades databases to it; ``store/peek.py`` reads only files at exactly it.
"""

from __future__ import annotations

SCHEMA_VERSION = 4
"""The schema this jobtrack writes and the newest it reads (``jobtrack_meta``'s ``schema_version`` row)."""

APPLICATION = "jobtrack"
"""``jobtrack_meta``'s ``application`` row: what tells a jobtrack database from another SQLite file."""
