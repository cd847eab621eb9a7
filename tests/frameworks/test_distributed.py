"""Training in several processes (#20): Lightning's DDP strategies on the CPU (gloo), two ranks, one job."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from datetime import timedelta
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
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


@pytest.mark.parametrize("runner", ["eager", "thread"])  # thread: the ranks are forked from its executor thread
def test_ddp_fork_reports_each_epoch_once_from_rank_zero(db_path: str, runner: str) -> None:
    status = Trainer(lambda ctx: ddp_fit(ctx, epochs=3), db=db_path, runner=runner).fit(DATASET).wait(timeout=120)
    assert status["status"] == "COMPLETED", status["result"].get("error")
    assert [e["epoch"] for e in status["result"]["epochs"]] == [0, 1, 2]  # not 0, 0, 1, 1, 2, 2


def test_a_cancel_stops_both_ranks_at_the_same_step(db_path: str) -> None:
    # Rank zero sees the cancel; alone, it would leave the loop while rank one waits in the next step's
    # gradient all-reduce until the process group's timeout.
    status = Trainer(lambda ctx: ddp_fit(ctx, epochs=20, cancel=(db_path, 6)), db=db_path,
                     runner="eager").fit(DATASET).get_status()
    assert status["status"] == "CANCELED", status["result"].get("error")
    # the ranks agree on a cancel every AGREE_EVERY steps and at each epoch's end: here, at epoch 1's (step 8)
    assert [e["epoch"] for e in status["result"]["epochs"]] == [0, 1]



def test_metrics_logged_from_rank_zero_only_keep_the_ranks_in_step(db_path: str) -> None:
    # rank zero reports and the other has nothing to report: both still agree on stopping at the same calls
    status = Trainer(lambda ctx: ddp_fit(ctx, epochs=3, module=RankZeroLogging), db=db_path,
                     runner="eager").fit(DATASET).get_status()
    assert status["status"] == "COMPLETED", status["result"].get("error")
    assert [e["epoch"] for e in status["result"]["epochs"]] == [0, 1, 2]

LIGHTNING_SCRIPT = """
import sys
import lightning.pytorch as pl
import pytest
import torch
import jobtrack
from jobtrack.integrations.lightning import JobtrackCallback
from test_distributed import Regressor, loader

with jobtrack.track(experiment="ddp", db=sys.argv[1]) as run:
    torch.manual_seed(0)
    trainer = pl.Trainer(max_epochs=3, accelerator="cpu", devices=2, strategy="ddp", logger=False,
                         enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                         callbacks=[JobtrackCallback()])
    trainer.fit(Regressor(), loader(128, 0), loader(64, 1))
    with open(f"rank{trainer.global_rank}.txt", "w") as out:
        out.write(f"rank {trainer.global_rank} job {run.job_id} steps {trainer.global_step}")
"""

TRANSFORMERS_SCRIPT = """
import sys
import torch
import jobtrack
from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainerCallback, TrainingArguments
from jobtrack.integrations.transformers import JobtrackCallback

DB, CANCEL_AT = sys.argv[1], int(sys.argv[2])


class Sequences(torch.utils.data.Dataset):
    def __init__(self, n, seed):
        g = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(1, 10, (n, 8), generator=g)
        self.labels = (self.ids == 7).any(dim=1).long()

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "labels": self.labels[i]}


class CancelAt(TrainerCallback):  # rank zero, which has the job, cancels it after step CANCEL_AT
    def __init__(self, job_id):
        self.job_id = job_id

    def on_step_end(self, args, state, control, **kwargs):
        if self.job_id is not None and state.global_step == CANCEL_AT:
            jobtrack.JobManager(DB).cancel_job(self.job_id)


with jobtrack.track(experiment="torchrun", db=DB) as run:
    torch.manual_seed(0)
    config = BertConfig(vocab_size=10, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=16, num_labels=2)
    args = TrainingArguments(num_train_epochs=20, per_device_train_batch_size=8, learning_rate=1e-2,
                             eval_strategy="epoch", logging_strategy="epoch", save_strategy="no",
                             report_to="none", use_cpu=True, disable_tqdm=True, ddp_timeout=%d)
    trainer = Trainer(model=BertForSequenceClassification(config), args=args, train_dataset=Sequences(64, 0),
                      eval_dataset=Sequences(32, 1), callbacks=[JobtrackCallback(run), CancelAt(run.job_id)])
    trainer.train()
    with open(f"rank{args.process_index}.txt", "w") as out:
        out.write(f"rank {args.process_index} job {run.job_id} steps {trainer.state.global_step}")
""" % HANG_S


def run_script(tmp_path: Path, text: str, *args: str, torchrun: bool = False) -> list[str]:
    """Run ``text`` as a script (every rank's process runs it); what the ranks wrote, rank zero's first."""
    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent(text), encoding="utf-8")
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"] if torchrun \
        else [sys.executable]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_PORT", "MASTER_ADDR"):  # as a user's shell has them
        env.pop(name, None)
    done = subprocess.run([*launcher, str(script), *args], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=3 * HANG_S)
    assert done.returncode == 0, done.stderr[-3000:]
    return [p.read_text(encoding="utf-8") for p in sorted(tmp_path.glob("rank*.txt"))]


def test_a_script_lightning_runs_again_per_rank_is_one_job(db_path: str, tmp_path: Path) -> None:
    # strategy="ddp" starts the script again for rank 1 (LOCAL_RANK=1): its track() block creates no job
    lines = run_script(tmp_path, LIGHTNING_SCRIPT, db_path)
    [job] = JobManager(db_path).list_jobs()
    assert lines == [f"rank 0 job {job.job_id} steps 12", "rank 1 job None steps 12"]
    status = job.get_status()
    assert status["status"] == "COMPLETED"
    assert [e["epoch"] for e in status["result"]["epochs"]] == [0, 1, 2]


def test_torchrun_is_one_job_and_a_cancel_stops_both_ranks(db_path: str, tmp_path: Path) -> None:
    # 4 steps per epoch and rank; canceled after step 6, both ranks stop at the same step, at most AGREE_EVERY
    # steps later (here at epoch 1's end, step 8, where the ranks agree too), and nothing hangs
    lines = run_script(tmp_path, TRANSFORMERS_SCRIPT, db_path, "6", torchrun=True)
    [job] = JobManager(db_path).list_jobs()
    assert lines == [f"rank 0 job {job.job_id} steps 8", "rank 1 job None steps 8"]
    status = job.get_status()
    assert status["status"] == "CANCELED"
    assert [e["epoch"] for e in status["result"]["epochs"]] in ([0], [0, 1])


def test_ddp_spawn_is_a_typed_error_naming_the_strategies_that_work(db_path: str) -> None:
    # spawn pickles the Trainer and so the callback's RunContext, which holds this process's database link
    status = Trainer(lambda ctx: ddp_fit(ctx, epochs=1, start="spawn"), db=db_path,
                     runner="eager").fit(DATASET).get_status()
    assert status["status"] == "FAILED"
    assert status["result"]["error"]["type"] == "InvalidArgument"
    assert "strategy='ddp' or 'ddp_fork'" in status["result"]["error"]["message"]


def test_patience_stops_both_ranks(db_path: str) -> None:
    # val_rmse judged larger-is-better: it only falls, so epoch 0 stays best and patience 1 stops after epoch 1
    status = Trainer(lambda ctx: ddp_fit(ctx, epochs=20), db=db_path, runner="eager", eval_metric="rmse",
                     eval_mode="max", patience=1).fit(DATASET).get_status()
    assert status["status"] == "COMPLETED", status["result"].get("error")
    assert status["result"]["stopped_early"] is True
    assert [e["epoch"] for e in status["result"]["epochs"]] == [0, 1]


def plain_rank(rank: int, ctx: RunContext, port: int) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2,
                            timeout=timedelta(seconds=HANG_S))
    total = torch.zeros(1)
    for epoch in range(3):
        total += 1
        dist.all_reduce(total)
        ctx.log_epoch(epoch, train={"total": float(total)})  # in every rank, as plain DDP code often does
    dist.destroy_process_group()


def test_plain_torch_distributed_code_logging_in_every_rank_stores_each_epoch_once(db_path: str) -> None:
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    status = Trainer(lambda ctx: mp.start_processes(plain_rank, args=(ctx, port), nprocs=2, start_method="fork"),
                     db=db_path).fit(DATASET).wait(timeout=120)
    assert status["status"] == "COMPLETED", status["result"].get("error")
    assert [(e["epoch"], e["train"]["total"]) for e in status["result"]["epochs"]] == [(0, 2.0), (1, 6.0), (2, 14.0)]
