"""Runners execute jobs: "thread" (default), "eager", "process" and "worker" (SPEC §4)."""

from __future__ import annotations

RUNNERS = ("thread", "eager", "process", "worker")
"""The names ``Trainer(runner=...)`` accepts."""
