"""A Hugging Face Transformers project tracked by jobtrack: a tiny BERT built from a config (no pretrained
weights, no download) learns whether a token sequence contains token 7 (#20).

Run it:  python examples/transformers_classifier/train_transformers.py [DB]
         (needs `pip install 'jobtrack[transformers]'`; works offline: HF_HUB_OFFLINE=1)

The jobtrack lines are marked ``# jobtrack``. ``eval_roc_auc`` reaches the job as ``validation.roc_auc``,
the binary classification task's metric; checkpoints go to the job's checkpoint directory.
"""

from __future__ import annotations

import os
import sys
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is fetched: the model is built from a config

import torch
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    EvalPrediction,
    Trainer as HFTrainer,
    TrainingArguments,
)

from jobtrack import Dataset, RunContext, Trainer
from jobtrack.integrations.transformers import JobtrackCallback  # jobtrack

MARKER = 7


class Sequences(torch.utils.data.Dataset[dict[str, torch.Tensor]]):
    """Random token sequences; the label says whether ``MARKER`` occurs."""

    def __init__(self, n: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(1, 10, (n, 8), generator=g)
        self.labels = (self.ids == MARKER).any(dim=1).long()

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "labels": self.labels[i]}


def roc_auc(scores: list[float], labels: list[int]) -> float:
    """The probability that a positive scores above a negative (ties count half)."""
    pos = [s for s, y in zip(scores, labels, strict=True) if y == 1]
    neg = [s for s, y in zip(scores, labels, strict=True) if y == 0]
    if not pos or not neg:
        return 0.5
    return sum((p > n) + 0.5 * (p == n) for p in pos for n in neg) / (len(pos) * len(neg))


def compute_metrics(pred: EvalPrediction) -> dict[str, float]:
    logits, labels = pred.predictions, pred.label_ids
    scores = (logits[:, 1] - logits[:, 0]).tolist()
    return {"roc_auc": roc_auc(scores, labels.tolist()), "accuracy": float((logits.argmax(1) == labels).mean())}


def train(ctx: RunContext) -> dict[str, Any]:
    torch.manual_seed(0)
    config = BertConfig(vocab_size=10, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=16, num_labels=2)
    args = TrainingArguments(num_train_epochs=int(ctx.config.get("epochs", 3)), per_device_train_batch_size=32,
                             learning_rate=1e-2, eval_strategy="epoch", logging_strategy="epoch",
                             save_strategy="no", report_to="none", use_cpu=True, disable_tqdm=True)
    trainer = HFTrainer(model=BertForSequenceClassification(config), args=args, train_dataset=Sequences(256, 0),
                        eval_dataset=Sequences(64, 1), compute_metrics=compute_metrics,
                        callbacks=[JobtrackCallback(ctx)])  # jobtrack
    trainer.train()
    return {"steps": trainer.state.global_step}


def main(db: str | None = None) -> str:
    dataset = Dataset("sequences", "binary_classification", "has_marker", tables={"train": [{"rows": 256}]})
    job = Trainer(train, config={"epochs": 3}, db=db, runner="eager").fit(dataset)  # jobtrack
    status = job.get_status()
    print(status["job_id"], status["status"], "best epoch", status["result"].get("best_epoch"),
          "roc_auc", status["result"].get("best_metric"))
    return status["status"]


if __name__ == "__main__":
    sys.exit(0 if main(sys.argv[1] if len(sys.argv) > 1 else None) == "COMPLETED" else 1)
