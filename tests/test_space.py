"""Search spaces of sweeps (#17): choices, ranges, fixed values, the CLI syntax, the grid and random samplers."""

from __future__ import annotations

import math
import warnings

import pytest

import jobtrack
from jobtrack.space import Space, median_says_prune, parse_space


def test_the_grid_has_every_point_once_in_a_fixed_order() -> None:
    space = Space.of({"lr": [0.1, 0.01], "depth": [2, 4, 8], "act": "relu"})
    grid = space.grid()
    assert len(grid) == space.grid_size() == 6
    assert grid[0] == {"act": "relu", "depth": 2, "lr": 0.1}
    assert grid[-1] == {"act": "relu", "depth": 8, "lr": 0.01}
    assert len({tuple(sorted(p.items())) for p in grid}) == 6


def test_a_grid_refuses_ranges_naming_them() -> None:
    space = Space.of({"lr": jobtrack.loguniform(1e-4, 1e-1), "depth": [2, 4]})
    with pytest.raises(jobtrack.InvalidArgument, match="lr is a range"):
        space.grid()


def test_random_points_are_the_same_for_the_same_seed_and_trial() -> None:
    space = Space.of({"lr": jobtrack.loguniform(1e-4, 1e-1), "drop": jobtrack.uniform(0, 0.5),
                      "depth": jobtrack.randint(2, 8), "act": ["relu", "tanh"], "epochs": 3})
    first = [space.sample(7, t) for t in range(50)]
    assert first == [space.sample(7, t) for t in range(50)]
    assert first != [space.sample(8, t) for t in range(50)]
    for p in first:
        assert 1e-4 <= p["lr"] < 1e-1 and 0 <= p["drop"] < 0.5 and 2 <= p["depth"] <= 8
        assert p["act"] in ("relu", "tanh") and p["epochs"] == 3 and isinstance(p["depth"], int)
    logs = sorted(math.log10(p["lr"]) for p in first)
    assert logs[0] < -3 and logs[-1] > -2  # log-uniform: spread over the decades


def test_the_cli_syntax_is_read_without_eval() -> None:
    space = parse_space("lr=loguniform(1e-4,1e-1); depth=[2,4,8]; act=relu; name='a;b'; drop=uniform(0, .5)")
    assert dict(space.params)["depth"] == (2, 4, 8)
    assert dict(space.params)["act"] == "relu"
    assert dict(space.params)["name"] == "a;b"
    assert repr(dict(space.params)["lr"]) == "loguniform(0.0001, 0.1)"
    assert parse_space(space.describe()) == space


@pytest.mark.parametrize("text", [
    "", "lr", "lr=", "=3", "lr=__import__('os').system('true')", "lr=loguniform(1)", "lr=loguniform(0, 1)",
    "lr=uniform(2, 1)", "depth=[]", "lr=1; lr=2", "x=[1, 1]", "x=open('f')", "x=randint(1.5, 3)", "x={'a': 1}",
])
def test_bad_space_strings_are_typed_errors(text: str) -> None:
    with pytest.raises(jobtrack.InvalidArgument):
        parse_space(text)


def test_a_bad_number_is_one_typed_error_without_a_syntax_warning_first() -> None:
    with warnings.catch_warnings(record=True) as seen:  # "<unknown>:1: SyntaxWarning: invalid decimal literal"
        warnings.simplefilter("always")
        with pytest.raises(jobtrack.InvalidArgument, match="'1or 2' is not a number"):
            parse_space("lr=1or 2")
    assert [str(w.message) for w in seen] == []


@pytest.mark.parametrize("space", [None, {}, [("lr", 1)], {"lr": [[1]]}, {"": [1]}, {"lr": float("nan")},
                                   {"lr": object()}])
def test_bad_spaces_are_typed_errors(space: object) -> None:
    with pytest.raises(jobtrack.InvalidArgument):
        Space.of(space)


def test_the_median_rule() -> None:
    assert median_says_prune(0.5, [0.8, 0.9, 0.7], "max")
    assert not median_says_prune(0.85, [0.8, 0.9, 0.7], "max")
    assert median_says_prune(2.0, [1.0, 1.5], "min")
    assert not median_says_prune(0.1, [0.9], "max")  # too few earlier trials to judge
    assert not median_says_prune(None, [0.8, 0.9], "max")


def test_choices_that_are_lists_are_refused_with_what_to_do_instead() -> None:
    with pytest.raises(jobtrack.InvalidArgument) as refused:
        Space.of({"layers": [[64, 32], [128]]})
    assert "each choice must be one number" in str(refused.value) and "'64-32'" in str(refused.value)
    assert "use a list for choices" not in str(refused.value)  # it is a list already
