"""The pure state machine of SPEC §1: five statuses, six transitions, typed refusals; no I/O."""

from __future__ import annotations

import itertools
import pickle

import pytest

from jobtrack.errors import InvalidArgument, InvalidTransition, JobtrackError
from jobtrack.states import INITIAL, TERMINAL, TRANSITIONS, JobStatus, check_transition, is_allowed, parse_status

STATUSES = ["QUEUED", "RUNNING", "COMPLETED", "FAILED", "CANCELED"]
ALLOWED = {
    ("QUEUED", "RUNNING"),
    ("QUEUED", "CANCELED"),
    ("QUEUED", "FAILED"),
    ("RUNNING", "COMPLETED"),
    ("RUNNING", "FAILED"),
    ("RUNNING", "CANCELED"),
}
ALL_PAIRS = list(itertools.product(STATUSES, STATUSES))
REFUSED = [p for p in ALL_PAIRS if p not in ALLOWED]


def test_status_values_are_the_five_upper_case_strings() -> None:
    assert [s.value for s in JobStatus] == STATUSES
    for s in JobStatus:
        assert s == s.value  # a StrEnum compares equal to its string
        assert str(s) == s.value
        assert s.value.isupper()


def test_terminal_is_completed_failed_canceled() -> None:
    assert TERMINAL == {JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELED}
    assert isinstance(TERMINAL, frozenset)
    assert [s.is_terminal for s in JobStatus] == [False, False, True, True, True]
    assert INITIAL is JobStatus.QUEUED and not INITIAL.is_terminal


def test_transitions_table_has_exactly_the_six_spec_moves() -> None:
    assert set(TRANSITIONS) == set(JobStatus)
    pairs = {(a.value, b.value) for a, nxt in TRANSITIONS.items() for b in nxt}
    assert pairs == ALLOWED
    assert sum(len(nxt) for nxt in TRANSITIONS.values()) == 6
    for s in TERMINAL:
        assert TRANSITIONS[s] == frozenset()
        assert s.next_statuses() == frozenset()
    assert JobStatus.QUEUED.next_statuses() == {JobStatus.RUNNING, JobStatus.CANCELED, JobStatus.FAILED}
    assert JobStatus.RUNNING.next_statuses() == {JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELED}


def test_transitions_table_is_read_only() -> None:
    with pytest.raises(TypeError):
        TRANSITIONS[JobStatus.COMPLETED] = frozenset({JobStatus.RUNNING})  # type: ignore[index]
    assert TRANSITIONS[JobStatus.COMPLETED] == frozenset()


@pytest.mark.parametrize(("src", "dst"), sorted(ALLOWED))
def test_allowed_moves_pass(src: str, dst: str) -> None:
    assert is_allowed(src, dst)
    assert is_allowed(JobStatus(src), JobStatus(dst))
    assert check_transition(src, dst) is None
    assert check_transition(JobStatus(src), JobStatus(dst), job_id="job_ok") is None


@pytest.mark.parametrize(("src", "dst"), REFUSED)
def test_refused_moves_raise_invalid_transition_naming_job_current_requested(src: str, dst: str) -> None:
    assert not is_allowed(src, dst)
    with pytest.raises(InvalidTransition) as info:
        check_transition(src, dst, job_id="job_42")
    err = info.value
    assert isinstance(err, JobtrackError)
    assert err.job_id == "job_42"
    assert err.current == src
    assert err.requested == dst
    message = str(err)
    assert "job_42" in message
    assert src in message
    assert dst in message


def test_refusal_without_job_id_still_names_current_and_requested() -> None:
    with pytest.raises(InvalidTransition) as info:
        check_transition("COMPLETED", "RUNNING")
    err = info.value
    assert err.job_id is None
    assert (err.current, err.requested) == ("COMPLETED", "RUNNING")
    assert "COMPLETED" in str(err) and "RUNNING" in str(err)


def test_terminal_refusal_says_terminal_and_nonterminal_lists_allowed() -> None:
    with pytest.raises(InvalidTransition, match="terminal"):
        check_transition("FAILED", "QUEUED", job_id="j")
    with pytest.raises(InvalidTransition) as info:
        check_transition("QUEUED", "COMPLETED", job_id="j")
    for allowed in ("RUNNING", "CANCELED", "FAILED"):
        assert allowed in str(info.value)


def test_invalid_transition_survives_pickling() -> None:
    with pytest.raises(InvalidTransition) as info:
        check_transition("RUNNING", "QUEUED", job_id="job_p")
    clone = pickle.loads(pickle.dumps(info.value))
    assert type(clone) is InvalidTransition
    assert (clone.job_id, clone.current, clone.requested) == ("job_p", "RUNNING", "QUEUED")
    assert str(clone) == str(info.value)


@pytest.mark.parametrize("text", ["queued", "Queued", "QUEUED", "rUnNiNg", "completed", "Failed", "canceled"])
def test_parse_status_accepts_any_case(text: str) -> None:
    status = parse_status(text)
    assert isinstance(status, JobStatus)
    assert status.value == text.upper()


def test_parse_status_accepts_enum_members() -> None:
    for s in JobStatus:
        assert parse_status(s) is s


@pytest.mark.parametrize("text", ["", "DONE", "cancelled", "queued ", "RUN", "SUCCEEDED", "none"])
def test_parse_status_rejects_unknown_with_invalid_argument(text: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        parse_status(text)
    err = info.value
    assert isinstance(err, JobtrackError)
    assert isinstance(err, ValueError)
    message = str(err)
    assert repr(text) in message
    for s in STATUSES:  # the message names the choices
        assert s in message


def test_unknown_status_strings_are_not_statuses() -> None:
    with pytest.raises(ValueError):
        is_allowed("QUEUED", "DONE")
    with pytest.raises(ValueError):
        check_transition("PAUSED", "RUNNING")
