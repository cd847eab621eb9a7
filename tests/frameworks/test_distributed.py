"""Training in several processes (#20): Lightning's DDP strategies on the CPU (gloo), two ranks, one job."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.strategies import DDPStrategy
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from jobtrack import Dataset, JobManager, RunContext, Trainer
from jobtrack.integrations.lightning import JobtrackCallback

DATASET = Dataset("synthetic", "regression", "linear", tables={"train": [{"rows": 128}]})

HANG_S = 60
"""A rank left waiting for the other in a collective fails after this (gloo's default is 30 minutes)."""


def loader(n: int, seed: int) -> DataLoader[Any]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    y = x @ torch.tensor([[1.0], [2.0], [-1.0], [0.5]]) + 0.1 * torch.randn(n, 1, generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=16)  # 2 ranks: 4 steps per epoch each


class Regressor(pl.LightningModule):
    def __init__(self, cancel: tuple[str, str, int] | None = None) -> None:
        super().__init__()
        self.net = nn.Linear(4, 1)
        self.cancel = cancel  # (db, job id, step): rank zero cancels the job after that step

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = nn.functional.mse_loss(self.net(x), y)
        self.log("train_loss", loss, on_step=False, on_epoch=True, sync_dist=True)
        return loss

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.cancel is not None and self.global_rank == 0 and self.trainer.global_step == self.cancel[2]:
            JobManager(self.cancel[0]).cancel_job(self.cancel[1])

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log("val_rmse", nn.functional.mse_loss(self.net(x), y).sqrt(), sync_dist=True)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.05)


class RankZeroLogging(Regressor):
    """Logs its metrics from rank zero only (``rank_zero_only=True``): the other rank has none."""

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = nn.functional.mse_loss(self.net(x), y)
        if self.global_rank == 0:
            self.log("train_loss", loss, on_step=False, on_epoch=True, rank_zero_only=True)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        if self.global_rank == 0:
            self.log("val_rmse", nn.functional.mse_loss(self.net(x), y).sqrt(), rank_zero_only=True)


def ddp_fit(ctx: RunContext, *, epochs: int, start: str = "fork", cancel: tuple[str, int] | None = None,
            module: type[Regressor] = Regressor) -> None:
    """Two ranks; ``cancel=(db, step)``: rank zero cancels the job after that step."""
    torch.manual_seed(0)
    strategy = DDPStrategy(start_method=start, process_group_backend="gloo", timeout=timedelta(seconds=HANG_S))
    trainer = pl.Trainer(max_epochs=epochs, accelerator="cpu", devices=2, strategy=strategy, logger=False,
                         enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                         callbacks=[JobtrackCallback(ctx)])
    trainer.fit(module(None if cancel is None else (cancel[0], ctx.job_id, cancel[1])), loader(128, 0),
                loader(64, 1))


def test_ddp_fork_reports_each_epoch_once_from_rank_zero(db_path: str) -> None:
    status = Trainer(lambda ctx: ddp_fit(ctx, epochs=3), db=db_path, runner="eager").fit(DATASET).get_status()
    assert status["status"] == "COMPLETED", status["result"].get("error")
    assert [e["epoch"] for e in status["result"]["epochs"]] == [0, 1, 2]  # not 0, 0, 1, 1, 2, 2


def test_a_cancel_stops_both_ranks_at_the_same_step(db_path: str) -> None:
    # Rank zero sees the cancel; alone, it would leave the loop while rank one waits in the next step's
    # gradient all-reduce until the process group's timeout.
    status = Trainer(lambda ctx: ddp_fit(ctx, epochs=20, cancel=(db_path, 6)), db=db_path,
                     runner="eager").fit(DATASET).get_status()
    assert status["status"] == "CANCELED", status["result"].get("error")
    assert [e["epoch"] for e in status["result"]["epochs"]] == [0]  # epoch 1 was cut at its third step


def test_metrics_logged_from_rank_zero_only_keep_the_ranks_in_step(db_path: str) -> None:
    # rank zero reports and the other has nothing to report: both still agree on stopping at the same calls
    status = Trainer(lambda ctx: ddp_fit(ctx, epochs=3, module=RankZeroLogging), db=db_path,
                     runner="eager").fit(DATASET).get_status()
    assert status["status"] == "COMPLETED", status["result"].get("error")
    assert [e["epoch"] for e in status["result"]["epochs"]] == [0, 1, 2]
