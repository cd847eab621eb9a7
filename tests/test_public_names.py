"""``jobtrack.__all__``: a literal, sorted list of exactly the names the package exports."""

from __future__ import annotations

import ast
from pathlib import Path

import jobtrack

SOURCE = ast.parse(Path(jobtrack.__file__).read_text(encoding="utf-8"))


def _type_checking_names() -> set[str]:
    """The names re-exported for type checkers in ``__init__.py``'s ``if TYPE_CHECKING:`` block."""
    for node in SOURCE.body:
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
            return {alias.asname or alias.name for stmt in node.body for alias in stmt.names}  # type: ignore[attr-defined]
    raise AssertionError("jobtrack/__init__.py has no `if TYPE_CHECKING:` block of re-exports")


def test_all_is_a_literal_list_of_strings() -> None:
    [assign] = [n for n in SOURCE.body if isinstance(n, ast.Assign) and ast.unparse(n.targets[0]) == "__all__"]
    assert isinstance(assign.value, ast.List)
    assert all(isinstance(e, ast.Constant) and isinstance(e.value, str) for e in assign.value.elts)


def test_all_equals_the_sorted_set_of_exported_names() -> None:
    assert jobtrack.__all__ == sorted(_type_checking_names() | {"__version__"})
    assert dir(jobtrack) == jobtrack.__all__


def test_every_name_in_all_resolves_and_others_do_not() -> None:
    for name in jobtrack.__all__:
        assert getattr(jobtrack, name) is not None, name
    assert not hasattr(jobtrack, "NoSuchName")


def test_every_error_class_is_reachable_from_the_package() -> None:
    """``except jobtrack.ResultTooLarge:`` in job code must not be an AttributeError that fails the job."""
    import jobtrack.errors

    assert set(jobtrack.errors.__all__) <= set(jobtrack.__all__)
    for name in jobtrack.errors.__all__:
        assert getattr(jobtrack, name) is getattr(jobtrack.errors, name)
