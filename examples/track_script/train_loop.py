"""A plain training script tracked with ``jobtrack.track()``: no ``train(ctx)`` function, two lines (#20).

Run it:  python examples/track_script/train_loop.py [DB]     then  jobtrack list / jobtrack show JOB

The block is a ``train`` job of this process: COMPLETED when it ends, FAILED with the traceback if it
raises, CANCELED on Ctrl-C (try it: the loop is slow enough with ``--slow``).
"""

from __future__ import annotations

import math
import random
import sys
import time

import jobtrack


def main(db: str | None = None, *, slow: bool = False) -> str:
    rng = random.Random(0)
    rows = [(x, 3.0 * x + 1.0 + rng.gauss(0, 0.1)) for x in (rng.uniform(-1, 1) for _ in range(200))]
    train, val = rows[:150], rows[150:]
    with jobtrack.track(experiment="line_fit", config={"lr": 0.01, "epochs": 10}, db=db,
                        eval_metric="rmse", eval_mode="min") as run:
        w, b = 0.0, 0.0
        for epoch in range(run.config["epochs"]):
            for x, y in train:
                err = w * x + b - y
                w, b = w - run.config["lr"] * err * x, b - run.config["lr"] * err
            rmse = math.sqrt(sum((w * x + b - y) ** 2 for x, y in val) / len(val))
            print(f"epoch {epoch}: w={w:.3f} b={b:.3f} rmse={rmse:.4f}")  # also in the job's log
            run.log_epoch(epoch, validation={"rmse": rmse})
            if slow:
                time.sleep(1.0)
    status = jobtrack.JobManager(db).fetch_job(run.job_id).get_status()
    print(status["job_id"], status["status"], "best epoch", status["result"].get("best_epoch"))
    return status["status"]


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--slow"]
    sys.exit(0 if main(args[0] if args else None, slow="--slow" in sys.argv) == "COMPLETED" else 1)
