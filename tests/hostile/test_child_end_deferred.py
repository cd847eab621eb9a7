"""A process-runner child whose end write is deferred to its recorder must not exit before it lands."""

from __future__ import annotations

from typing import Any

import pytest

from jobtrack import Dataset, Trainer
from jobtrack.errors import StoreUnavailable
from jobtrack.store import Store


def _train(ctx: Any) -> dict[str, Any]:
    ctx.log_epoch(0, train={"loss": 1.0})
    return {"ok": True}


def test_a_childs_deferred_end_lands_before_it_exits(db_path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    real_finish = Store.finish
    calls = [0]

    def finish(self: Store, *args: Any, **kw: Any) -> Any:  # in the forked child: the first end write is refused
        calls[0] += 1
        if calls[0] == 1:
            raise StoreUnavailable(self.target, "the connection to the server was lost (test)")
        return real_finish(self, *args, **kw)

    monkeypatch.setattr(Store, "finish", finish)
    job = Trainer(_train, db=db_path, runner="process").fit(
        Dataset("d", "regression", "t", tables={"train": [{"x": 1.0, "y": 2.0}]}))
    status = job.wait(timeout=30)
    assert (status["status"], [e.reason for e in job.events()][-1]) == ("COMPLETED", "completed")
