"""PyTorch Lightning with ``jobtrack.integrations.lightning.JobtrackCallback``: real training on the CPU (#20)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from jobtrack import Dataset, InvalidArgument, RunContext, Trainer, track
from jobtrack.integrations.lightning import JobtrackCallback

DATASET = Dataset("synthetic", "regression", "linear", tables={"train": [{"rows": 256}]})


def loader(n: int, seed: int) -> DataLoader[Any]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    y = x @ torch.tensor([[1.0], [2.0], [-1.0], [0.5]]) + 0.1 * torch.randn(n, 1, generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=32)


class Regressor(pl.LightningModule):
    def __init__(self, gate: Any = None) -> None:
        super().__init__()
        self.net = nn.Linear(4, 1)
        self.gate = gate

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = nn.functional.mse_loss(self.net(x), y)
        self.log("train_loss", loss, on_step=True, on_epoch=True)  # train_loss_step is left out, _epoch cut
        return loss

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.gate is not None:  # runs after the callbacks' on_train_batch_end
            self.gate.step_done()

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log("val_rmse", nn.functional.mse_loss(self.net(x), y).sqrt())
        self.log("lr", 0.1)  # no prefix: a training metric

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.05)


def fit(ctx: RunContext, *, epochs: int = 4, gate: Any = None, **callback: Any) -> dict[str, Any]:
    torch.manual_seed(0)
    trainer = pl.Trainer(max_epochs=epochs, logger=False, enable_progress_bar=False, enable_model_summary=False,
                         default_root_dir=str(ctx.job_dir), callbacks=[JobtrackCallback(ctx, **callback)])
    trainer.fit(Regressor(gate), loader(256, 0), loader(64, 1))
    return {"steps": trainer.global_step, "stopped": trainer.should_stop}


def test_epochs_reach_the_result_and_the_task_metric_picks_the_best(db_path: str, best_by: Any) -> None:
    job = Trainer(fit, db=db_path, runner="eager").fit(DATASET)
    status = job.get_status()
    result = status["result"]
    assert status["status"] == "COMPLETED", result.get("error")
    epochs = result["epochs"]
    assert [e["epoch"] for e in epochs] == [0, 1, 2, 3]  # the sanity check is no epoch
    assert all(set(e["validation"]) == {"rmse"} and {"loss", "lr"} <= set(e["train"]) for e in epochs)
    assert not any(name.endswith(("_step", "_epoch")) for e in epochs for name in e["train"])
    assert result["eval_metric"] == "rmse"  # the regression task's metric
    assert (result["best_epoch"], result["best_metric"]) == best_by(epochs, "rmse", "min")
    assert result["summary"]["steps"] == 4 * 8
    # Lightning's own checkpoint went under the job, not into the working directory
    assert list((Path(db_path + "-files")).rglob("*.ckpt")), "no checkpoint under the job's files"


def test_a_cancel_from_another_thread_stops_training_within_one_step(db_path: str, step_gate: Any) -> None:
    gate = step_gate(10)  # epoch 1, step 2 of 8
    job = Trainer(lambda ctx: fit(ctx, epochs=50, gate=gate), db=db_path).fit(DATASET)  # the thread runner
    at_cancel = gate.cancel_at_gate(job.cancel)
    status = job.wait(timeout=120)
    assert status["status"] == "CANCELED"
    assert gate.steps - at_cancel <= 1, f"{gate.steps - at_cancel} steps ran after the cancel"
    assert [e["epoch"] for e in status["result"]["epochs"]] == [0]  # the cut epoch is not reported
    assert status["result"]["summary"]["stopped"] is True  # the code returned after trainer.should_stop


def test_patience_stops_the_trainer_and_mapping_renames(db_path: str) -> None:
    # val_rmse reported as validation "error", judged larger-is-better: it only falls, so epoch 0 stays best
    mapping = {"val_rmse": ("validation", "error"), "lr": None}
    job = Trainer(lambda ctx: fit(ctx, epochs=30, mapping=mapping), db=db_path, runner="eager",
                  eval_metric="error", eval_mode="max", patience=2).fit(DATASET)
    status = job.get_status()
    epochs = status["result"]["epochs"]
    assert status["status"] == "COMPLETED" and status["result"]["stopped_early"] is True
    assert len(epochs) == 3  # best at epoch 0 (the error only falls), then two without improvement
    assert all(set(e["validation"]) == {"error"} and "lr" not in e["train"] for e in epochs)


def test_with_track_and_no_context_argument(db_path: str) -> None:
    with track(experiment="lightning_track", db=db_path, eval_metric="rmse", eval_mode="min") as run:
        trainer = pl.Trainer(max_epochs=2, logger=False, enable_progress_bar=False, enable_model_summary=False,
                             enable_checkpointing=False, callbacks=[JobtrackCallback()])  # the open run
        trainer.fit(Regressor(), loader(64, 0), loader(32, 1))
    from jobtrack import JobManager

    status = JobManager(db_path).fetch_job(run.job_id).get_status()
    assert status["status"] == "COMPLETED" and len(status["result"]["epochs"]) == 2
    assert status["result"]["best_epoch"] in (0, 1)


def test_bad_arguments_are_typed_errors() -> None:
    with pytest.raises(InvalidArgument, match="needs a run"):
        JobtrackCallback()
    with pytest.raises(InvalidArgument, match="mapping"):
        JobtrackCallback(object(), mapping={"x": "validation"})  # type: ignore[dict-item]


def test_one_element_tensors_are_metric_numbers(db_path: str) -> None:
    def train(ctx: RunContext) -> None:  # a loss kept as a tensor of shape (1,), as a hand-written loop may
        ctx.log_epoch(0, train={"loss": torch.tensor([0.5])}, validation={"rmse": torch.tensor([[0.25]])})

    status = Trainer(train, db=db_path, runner="eager").fit(DATASET).get_status()
    assert status["status"] == "COMPLETED", status["result"].get("error")
    assert status["result"]["epochs"] == [{"epoch": 0, "train": {"loss": 0.5}, "validation": {"rmse": 0.25}}]
