"""Every ``jobtrack X --help`` says what X does and explains every option and argument it lists."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobtrack import cli

COMMANDS = ["list", "status", "show", "cancel", "logs", "wait", "prune", "models", "plot", "worker", "demo",
            "migrate", "export", "import", "merge", "tag", "untag", "compare", "ui", "report", "retry", "sweep",
            "sweep run", "sweep show", "sweep list"]


def _help(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, argv: list[str]) -> str:
    monkeypatch.setenv("COLUMNS", "250")  # one line per entry: an entry's help, if any, is on its own line
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        cli.main([*argv, "--help"])
    assert exc.value.code == 0
    return capsys.readouterr().out


def _entries_without_help(text: str) -> list[str]:
    """The argument lines of ``positional arguments:`` and ``options:`` that have no explanation."""
    missing, lines = [], text.splitlines()
    in_section = False
    for i, line in enumerate(lines):
        if line in ("positional arguments:", "options:"):
            in_section = True
            continue
        if not line.strip() or not line.startswith(" "):
            in_section = False
            continue
        if not in_section or not line.startswith("  ") or line.startswith("   "):
            continue  # a continuation line, or a subcommand under a positional
        explained = "  " in line.strip() or (i + 1 < len(lines) and lines[i + 1].startswith("   "))
        if not explained:
            missing.append(line.strip())
    return missing


@pytest.mark.parametrize("command", COMMANDS)
def test_every_option_is_explained(command: str, capsys: pytest.CaptureFixture[str],
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    assert _entries_without_help(_help(capsys, monkeypatch, command.split())) == []


@pytest.mark.parametrize("command", COMMANDS)
def test_help_says_what_the_command_does(command: str, capsys: pytest.CaptureFixture[str],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The one line ``jobtrack --help`` gives a command is also the first paragraph of its own --help."""
    words = command.split()
    listing = _help(capsys, monkeypatch, words[:-1])
    summary = next(line.split(None, 1)[1] for line in listing.splitlines()
                   if line.startswith("    ") and line.split(None, 1)[0] == words[-1])
    own = _help(capsys, monkeypatch, words)
    assert summary.strip() in own.split("options:")[0].split("positional arguments:")[0]


def test_wait_help_gives_the_exit_codes(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    assert "exit 0 COMPLETED, 3 FAILED, 4 CANCELED" in _help(capsys, monkeypatch, ["wait"])


@pytest.mark.parametrize(("argv", "example"), [(["worker", "--concurrency", "0"], "--concurrency 4"),
                                               (["worker", "--max-jobs", "0"], "--max-jobs 1"),
                                               (["list", "--limit", "0"], "--limit 50")])
def test_a_refused_count_suggests_a_sensible_one(argv: list[str], example: str, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """`--concurrency 0` suggested `--concurrency 50`: fifty training jobs at once on one machine."""
    capsys.readouterr()
    assert cli.main(["--db", str(tmp_path / "jobs.db"), *argv]) == 2
    err = capsys.readouterr().err
    assert f"use e.g. {example}." in err
    assert not (tmp_path / "jobs.db").exists()
