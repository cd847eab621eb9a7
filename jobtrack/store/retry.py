"""Retrying a whole write transaction while the store is busy or briefly unavailable."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import TypeVar

from jobtrack import runtime
from jobtrack.errors import StoreBusy, StoreUnavailable
from jobtrack.store.tx import Tx

log = logging.getLogger(__name__)

T = TypeVar("T")


class Retrying:
    """``transact()`` for a Database: its ``write()`` run again with backoff until it goes through."""

    lock_timeout: float

    def write(self, *, durable: bool = True) -> AbstractContextManager[Tx]:
        raise NotImplementedError

    def transact(self, fn: Callable[[Tx], T], *, durable: bool = True, attempts: int | None = None,
                 timeout: float | None = None) -> T:
        """Run ``fn(tx)`` in a write transaction, retried with backoff while the store is busy or unavailable.

        Each attempt is a fresh transaction (a failed one was rolled back), so ``fn`` may run more than
        once; when a server connection drops during COMMIT the attempt may have been applied, so ``fn``
        should be a conditional write (fenced by a claim token or a status) that is safe to repeat.

        Args:
            attempts: at most this many attempts (default: until the deadline).
            timeout: seconds until the last retry may start (default: ``lock_timeout``).

        Raises:
            StoreBusy, StoreUnavailable: still failing at the deadline (or after ``attempts``).
            NestedWrite, DatabaseReplaced: at once, never retried.
        """
        deadline = time.monotonic() + (self.lock_timeout if timeout is None else timeout)
        delay, attempt = 0.01, 0
        while True:
            attempt += 1
            try:
                with self.write(durable=durable) as tx:
                    return fn(tx)
            except (StoreBusy, StoreUnavailable) as exc:
                pause = delay * (0.5 + random.random())
                if (attempts is not None and attempt >= attempts) or time.monotonic() + pause > deadline:
                    raise
                log.info("jobtrack: %s; retrying in %.2f s (attempt %d)", exc, pause, attempt + 1)
                time.sleep(pause)
                delay = min(delay * 2, 1.0)

    def reread(self, fn: Callable[[], T]) -> T:
        """``fn()``, a read of a server database, run again with backoff while the connection to the server is
        lost (a read is always safe to repeat; a restart drops every connection), until ``lock_timeout``."""
        from jobtrack.store.server import OUTAGE_FIRST_S, OUTAGE_MOST_S

        return runtime.retried(fn, lambda exc: isinstance(exc, StoreUnavailable), time.monotonic() + self.lock_timeout,
                               first=OUTAGE_FIRST_S, most=OUTAGE_MOST_S)
