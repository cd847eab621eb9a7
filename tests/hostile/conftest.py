"""The hostile suite's switch: ``--hostile-long`` runs its random loops at full length.

The default run keeps the whole directory under two minutes; ``pytest tests/hostile --hostile-long``
runs the counts the issues ask for (200 signals and more). The option itself is registered in
``tests/conftest.py``: pytest reads only the options of conftest files it loads before parsing the
command line, and a bare ``pytest`` (testpaths) does not load this one that early.
"""

from __future__ import annotations

import pytest


@pytest.fixture
def hostile_long(request: pytest.FixtureRequest) -> bool:
    """Whether ``--hostile-long`` was given."""
    return bool(request.config.getoption("--hostile-long"))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # The random-signal loop runs in batches of 50 processes (~55 signals), each its own test (within
    # the per-test timeout): one batch by default, five (250 processes, ~275 signals) with --hostile-long.
    if "signal_batch" in metafunc.fixturenames:
        batches = 5 if metafunc.config.getoption("--hostile-long") else 1
        metafunc.parametrize("signal_batch", range(batches))
