"""SIGTERM/SIGINT while in-process runners hold jobs: record them CANCELED (reason: signal), then let the signal act.

Without this, a Ctrl-C or a ``kill`` would leave the process's jobs for the liveness check to call
FAILED ("runner lost"); a signal is the user's decision to stop, so the jobs read CANCELED.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from types import FrameType
from typing import TYPE_CHECKING, Any

from jobtrack import liveness

if TYPE_CHECKING:
    from jobtrack.store import Store

log = logging.getLogger(__name__)

_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_stores: dict[str, Store] = {}
_previous: dict[int, Any] = {}
_installed_pid = -1


def watch(store: Store) -> None:
    """Cancel this process's in-process jobs of ``store`` on SIGTERM/SIGINT (main thread only)."""
    global _installed_pid
    _stores[store.target] = store
    if _installed_pid == os.getpid() or threading.current_thread() is not threading.main_thread():
        return
    for sig in _SIGNALS:
        _previous[sig] = signal.getsignal(sig)
        signal.signal(sig, _on_signal)
    _installed_pid = os.getpid()


def _on_signal(signum: int, frame: FrameType | None) -> None:
    name = signal.Signals(signum).name
    me = liveness.current()
    for store in list(_stores.values()):
        try:
            n = store.cancel_process_jobs(me.encode(), reason=f"signal {name}")
            if n:
                log.info("%s: %d job(s) of %s recorded CANCELED", name, n, store.target)
        except Exception as exc:  # noqa: BLE001 - the signal must still act
            log.warning("%s: could not record jobs as canceled: %s", name, exc)
    previous = _previous.get(signum, signal.SIG_DFL)
    if callable(previous):
        previous(signum, frame)  # e.g. SIGINT's default handler raises KeyboardInterrupt
    elif previous == signal.SIG_DFL:
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)  # die of the signal, as the process would have without us
