"""Hugging Face Transformers with ``jobtrack.integrations.transformers.JobtrackCallback``: a tiny BERT built
from a config (no pretrained weights, no network: HF_HUB_OFFLINE=1) trained on the CPU (#20)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    EvalPrediction,
    Trainer as HFTrainer,
    TrainerCallback,
    TrainingArguments,
)

from jobtrack import Dataset, RunContext, Trainer
from jobtrack.integrations.transformers import JobtrackCallback

DATASET = Dataset("sequences", "binary_classification", "has_marker", tables={"train": [{"rows": 96}]})


class Sequences(torch.utils.data.Dataset[dict[str, torch.Tensor]]):
    def __init__(self, n: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(1, 10, (n, 8), generator=g)
        self.labels = (self.ids == 7).any(dim=1).long()

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "labels": self.labels[i]}


def roc_auc(pred: EvalPrediction) -> dict[str, float]:
    scores = (pred.predictions[:, 1] - pred.predictions[:, 0]).tolist()
    labels = pred.label_ids.tolist()
    pos = [s for s, y in zip(scores, labels, strict=True) if y == 1]
    neg = [s for s, y in zip(scores, labels, strict=True) if y == 0]
    auc = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg) / max(1, len(pos) * len(neg))
    return {"roc_auc": auc}


class Gate(TrainerCallback):  # type: ignore[misc]
    def __init__(self, gate: Any) -> None:
        self.gate = gate

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.gate.step_done()


def fit(ctx: RunContext, *, epochs: int = 3, gate: Any = None, save: str = "epoch") -> dict[str, Any]:
    torch.manual_seed(0)
    config = BertConfig(vocab_size=10, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=16, num_labels=2)
    args = TrainingArguments(num_train_epochs=epochs, per_device_train_batch_size=16, learning_rate=1e-2,
                             eval_strategy="epoch", logging_strategy="epoch", save_strategy=save,
                             report_to="none", use_cpu=True, disable_tqdm=True)  # no output_dir: the job's
    callbacks = [JobtrackCallback(ctx)] + ([Gate(gate)] if gate is not None else [])
    trainer = HFTrainer(model=BertForSequenceClassification(config), args=args, train_dataset=Sequences(96, 0),
                        eval_dataset=Sequences(32, 1), compute_metrics=roc_auc, callbacks=callbacks)
    trainer.train()
    return {"steps": trainer.state.global_step, "output_dir": args.output_dir}


def test_epochs_reach_the_result_and_the_task_metric_picks_the_best(db_path: str, best_by: Any,
                                                                     tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.chdir(tmp_path)
    job = Trainer(fit, db=db_path, runner="eager").fit(DATASET)
    status = job.get_status()
    result = status["result"]
    assert status["status"] == "COMPLETED", result.get("error")
    epochs = result["epochs"]
    assert [e["epoch"] for e in epochs] == [0, 1, 2]
    assert all({"loss", "roc_auc"} <= set(e["validation"]) and "loss" in e["train"] for e in epochs)
    assert not any(k.endswith(("runtime", "per_second")) or k == "epoch" for e in epochs
                   for part in (e["train"], e["validation"]) for k in part)
    assert result["eval_metric"] == "roc_auc"  # the binary classification task's metric
    assert (result["best_epoch"], result["best_metric"]) == best_by(epochs, "roc_auc", "max")
    # checkpoints under the job (the library's default folder is not left in the working directory)
    out = Path(result["summary"]["output_dir"])
    assert out.is_relative_to(Path(db_path + "-files"))
    assert {p.name for p in out.iterdir()} == {"checkpoint-6", "checkpoint-12", "checkpoint-18"}  # 6 steps an epoch
    assert not (tmp_path / "trainer_output").exists()


def test_a_cancel_from_another_thread_stops_training_within_one_step(db_path: str, step_gate: Any) -> None:
    gate = step_gate(9)  # epoch 1 (6 steps an epoch), its third step
    job = Trainer(lambda ctx: fit(ctx, epochs=40, gate=gate, save="no"), db=db_path).fit(DATASET)
    at_cancel = gate.cancel_at_gate(job.cancel)
    status = job.wait(timeout=120)
    assert status["status"] == "CANCELED"
    assert gate.steps - at_cancel <= 1, f"{gate.steps - at_cancel} steps ran after the cancel"
    assert [e["epoch"] for e in status["result"]["epochs"]] == [0]  # the cut epoch is not reported
    assert status["result"]["summary"]["steps"] == gate.steps


@pytest.mark.parametrize("strategy", ["no", "steps"])
def test_without_an_evaluation_per_epoch_the_epoch_is_reported_when_the_next_starts(db_path: str,
                                                                                     strategy: str) -> None:
    def train(ctx: RunContext) -> None:
        args = TrainingArguments(num_train_epochs=2, per_device_train_batch_size=16, eval_strategy=strategy,
                                 eval_steps=2, logging_strategy="epoch", save_strategy="no", report_to="none",
                                 use_cpu=True, disable_tqdm=True, output_dir=str(ctx.job_dir / "out"))
        config = BertConfig(vocab_size=10, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                            intermediate_size=16, max_position_embeddings=16, num_labels=2)
        HFTrainer(model=BertForSequenceClassification(config), args=args, train_dataset=Sequences(64, 0),
                  eval_dataset=Sequences(16, 1), callbacks=[JobtrackCallback(ctx)]).train()

    status = Trainer(train, db=db_path, runner="eager", eval_metric="loss").fit(DATASET).get_status()
    epochs = status["result"]["epochs"]
    assert status["status"] == "COMPLETED" and [e["epoch"] for e in epochs] == [0, 1]
    assert all("loss" in e["train"] for e in epochs)
    assert all(bool(e["validation"]) == (strategy == "steps") for e in epochs)


def test_an_evaluation_before_training_is_not_reported_as_the_first_epoch(db_path: str) -> None:
    """A baseline ``trainer.evaluate()`` before ``train()`` (no evaluation per epoch) was reported as epoch 0's
    validation metrics, and picked as its best epoch: the untrained model's roc_auc."""
    def train(ctx: RunContext) -> None:
        args = TrainingArguments(num_train_epochs=2, per_device_train_batch_size=16, logging_strategy="epoch",
                                 save_strategy="no", report_to="none", use_cpu=True, disable_tqdm=True,
                                 output_dir=str(ctx.job_dir / "out"))
        config = BertConfig(vocab_size=10, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                            intermediate_size=16, max_position_embeddings=16, num_labels=2)
        trainer = HFTrainer(model=BertForSequenceClassification(config), args=args, train_dataset=Sequences(64, 0),
                            eval_dataset=Sequences(16, 1), compute_metrics=roc_auc, callbacks=[JobtrackCallback(ctx)])
        trainer.evaluate()  # the baseline
        trainer.train()

    result = Trainer(train, db=db_path, runner="eager").fit(DATASET).get_status()["result"]
    assert [e["epoch"] for e in result["epochs"]] == [0, 1]
    assert all(e["validation"] == {} and "loss" in e["train"] for e in result["epochs"])
    assert result["best_epoch"] is None
