"""``flatten_output=True``: one predictions row per label or per candidate, as the reference SDK writes them.

Pure (no I/O). A predictions row of a multi-label or link-prediction job holds lists, one element per label
or candidate, in its list-valued columns (``{"id": 7, "predicted_labels": ["a", "b"], "probs": [0.9, 0.7]}``);
flattening gives one row per element with those columns holding one element each, keeps every other
column, adds ``rank`` (1 = first in the list) for link prediction, and drops the ``ground_truth`` column
for every task type.
"""

from __future__ import annotations

from typing import Any

from jobtrack.errors import InvalidArgument

GROUND_TRUTH = "ground_truth"
"""The column a predictions export may carry with the true labels; ``flatten_output=True`` drops it."""

LINK_TASKS = frozenset({"link_prediction", "repeated_link_prediction"})
EXPLODED_TASKS = frozenset({"multilabel_classification", *LINK_TASKS})
"""Task types whose list-valued prediction columns become one row per element."""


def flatten(task_type: str, columns: list[str], values: list[list[Any]]) -> tuple[list[str], list[list[Any]]]:
    """The flattened columns and rows of a predictions export (see the module docstring).

    A column is list-valued when any row holds a list in it; in each row those columns must hold lists
    of one length (``None`` counts as an empty list: that row gives no rows).

    Raises:
        InvalidArgument: a row whose list columns differ in length, or hold a scalar where others hold lists.
    """
    keep = [i for i, c in enumerate(columns) if c != GROUND_TRUTH]
    cols = [columns[i] for i in keep]
    rows = [[row[i] for i in keep] for row in values]
    if task_type not in EXPLODED_TASKS:
        return cols, rows
    lists = [i for i in range(len(cols)) if any(isinstance(row[i], list) for row in rows)]
    if not lists:
        return cols, rows
    add_rank = task_type in LINK_TASKS and "rank" not in cols
    out: list[list[Any]] = []
    for n, row in enumerate(rows):
        cells = {i: [] if row[i] is None else row[i] for i in lists}
        bad = [cols[i] for i, cell in cells.items() if not isinstance(cell, list)]
        if bad:
            raise InvalidArgument(
                f"export('predictions') with flatten_output=True: row {n} holds a single value in {bad}, where "
                "other rows hold lists; give every row a list there (one element per label or candidate)."
            )
        lengths = {len(cell) for cell in cells.values()}
        if len(lengths) > 1:
            sizes = {cols[i]: len(cell) for i, cell in cells.items()}
            raise InvalidArgument(
                f"export('predictions') with flatten_output=True: row {n} has lists of different lengths {sizes}; "
                "the lists of a row must pair up element by element."
            )
        for k in range(lengths.pop() if lengths else 0):
            flat = [cells[i][k] if i in cells else value for i, value in enumerate(row)]
            out.append([*flat, k + 1] if add_rank else flat)
    return [*cols, "rank"] if add_rank else cols, out
