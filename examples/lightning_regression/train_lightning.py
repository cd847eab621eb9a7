"""A PyTorch Lightning project tracked by jobtrack: a linear regressor on data it makes itself (#20).

Run it:  python examples/lightning_regression/train_lightning.py [DB]   (needs `pip install 'jobtrack[lightning]'`)

The three jobtrack lines are marked ``# jobtrack``: the import, the callback, and the Trainer that runs
``train`` as a job. Each epoch's ``train_loss`` and ``val_rmse`` reach the job as ``train.loss`` and
``validation.rmse``; ``rmse`` is the regression task's metric, so it picks the best epoch.
"""

from __future__ import annotations

import sys
from typing import Any

import lightning.pytorch as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from jobtrack import Dataset, RunContext, Trainer
from jobtrack.integrations.lightning import JobtrackCallback  # jobtrack

WEIGHTS = (1.0, 2.0, -1.0, 0.5)


def make_loader(n: int, seed: int) -> DataLoader[Any]:
    """``y = x @ WEIGHTS + noise``, made here: no download."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, len(WEIGHTS), generator=g)
    y = x @ torch.tensor(WEIGHTS).unsqueeze(1) + 0.1 * torch.randn(n, 1, generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=32)


class Regressor(pl.LightningModule):
    def __init__(self, lr: float) -> None:
        super().__init__()
        self.lr = lr
        self.net = nn.Linear(len(WEIGHTS), 1)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = nn.functional.mse_loss(self.net(x), y)
        self.log("train_loss", loss, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log("val_rmse", nn.functional.mse_loss(self.net(x), y).sqrt())

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.lr)


def train(ctx: RunContext) -> dict[str, Any]:
    torch.manual_seed(0)
    trainer = pl.Trainer(max_epochs=int(ctx.config.get("epochs", 5)), logger=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=str(ctx.job_dir),
                         callbacks=[JobtrackCallback(ctx)])  # jobtrack
    trainer.fit(Regressor(float(ctx.config.get("lr", 0.1))), make_loader(512, 0), make_loader(128, 1))
    return {"steps": trainer.global_step}


def main(db: str | None = None) -> str:
    dataset = Dataset("synthetic", "regression", "linear", tables={"train": [{"rows": 512}]})
    job = Trainer(train, config={"epochs": 5, "lr": 0.1}, db=db, runner="eager").fit(dataset)  # jobtrack
    status = job.get_status()
    print(status["job_id"], status["status"], "best epoch", status["result"].get("best_epoch"),
          "rmse", status["result"].get("best_metric"))
    return status["status"]


if __name__ == "__main__":
    sys.exit(0 if main(sys.argv[1] if len(sys.argv) > 1 else None) == "COMPLETED" else 1)
