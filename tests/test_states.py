"""The pure state machine of SPEC §1 (five statuses, six transitions, worded refusals; no I/O), the store's
check that raises the typed refusal, and the parsing of user-given status and type names."""

from __future__ import annotations

import itertools
import pickle

import pytest

from jobtrack.errors import InvalidArgument, InvalidTransition, JobtrackError
from jobtrack.manager import parse_job_type, parse_status
from jobtrack.states import INITIAL, TERMINAL, TRANSITIONS, JobStatus, JobType, is_allowed, refusal
from jobtrack.store.core import check_transition

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
    assert is_allowed(JobStatus(src), JobStatus(dst))
    assert refusal(src, dst) is None
    assert refusal(JobStatus(src), JobStatus(dst)) is None
    assert check_transition("job_ok", JobStatus(src), JobStatus(dst)) is None
    assert check_transition(None, JobStatus(src), JobStatus(dst)) is None


@pytest.mark.parametrize(("src", "dst"), REFUSED)
def test_refused_moves_raise_invalid_transition_naming_job_current_requested(src: str, dst: str) -> None:
    assert not is_allowed(JobStatus(src), JobStatus(dst))
    why = refusal(src, dst)
    assert isinstance(why, str) and why
    with pytest.raises(InvalidTransition) as info:
        check_transition("job_42", JobStatus(src), JobStatus(dst))
    err = info.value
    assert isinstance(err, JobtrackError)
    assert err.job_id == "job_42"
    assert err.current == src
    assert err.requested == dst
    assert err.why == why
    message = str(err)
    assert "job_42" in message
    assert src in message
    assert dst in message
    assert why in message


def test_refusal_without_job_id_still_names_current_and_requested() -> None:
    with pytest.raises(InvalidTransition) as info:
        check_transition(None, JobStatus.COMPLETED, JobStatus.RUNNING)
    err = info.value
    assert err.job_id is None
    assert (err.current, err.requested) == ("COMPLETED", "RUNNING")
    assert "COMPLETED" in str(err) and "RUNNING" in str(err)


def test_terminal_refusal_says_terminal_and_nonterminal_lists_allowed() -> None:
    with pytest.raises(InvalidTransition, match="terminal"):
        check_transition("j", JobStatus.FAILED, JobStatus.QUEUED)
    with pytest.raises(InvalidTransition) as info:
        check_transition("j", JobStatus.QUEUED, JobStatus.COMPLETED)
    for allowed in ("RUNNING", "CANCELED", "FAILED"):
        assert allowed in str(info.value)
    for terminal in TERMINAL:
        assert refusal(terminal, JobStatus.RUNNING) == "which is terminal; it cannot move anywhere"
    assert refusal(JobStatus.RUNNING, JobStatus.QUEUED) == "which may only move to CANCELED, COMPLETED, FAILED"
    assert refusal(JobStatus.QUEUED, JobStatus.COMPLETED) == "which may only move to CANCELED, FAILED, RUNNING"


def test_invalid_transition_survives_pickling() -> None:
    with pytest.raises(InvalidTransition) as info:
        check_transition("job_p", JobStatus.RUNNING, JobStatus.QUEUED)
    clone = pickle.loads(pickle.dumps(info.value))
    assert type(clone) is InvalidTransition
    assert (clone.job_id, clone.current, clone.requested, clone.why) == (
        "job_p", "RUNNING", "QUEUED", info.value.why)
    assert str(clone) == str(info.value)


@pytest.mark.parametrize("text", ["queued", "Queued", "QUEUED", "rUnNiNg", "completed", "Failed", "canceled"])
def test_parse_status_accepts_any_case(text: str) -> None:
    status = parse_status(text)
    assert isinstance(status, JobStatus)
    assert status.value == text.upper()
    assert JobStatus.parse(text) is status


def test_parse_status_accepts_enum_members() -> None:
    for s in JobStatus:
        assert parse_status(s) is s
        assert JobStatus.parse(s) is s


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
    assert JobStatus.parse(text) is None  # the pure parse says "no such status" without raising


@pytest.mark.parametrize("text", ["train", "TRAIN", "Inference", "train_INFERENCE"])
def test_parse_job_type_accepts_any_case(text: str) -> None:
    job_type = parse_job_type(text)
    assert isinstance(job_type, JobType) and job_type.value == text.lower()
    assert JobType.parse(text) is job_type
    assert parse_job_type(job_type) is job_type


@pytest.mark.parametrize("text", ["", "training", "predict", "train inference", "none"])
def test_parse_job_type_rejects_unknown_with_invalid_argument(text: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        parse_job_type(text)
    assert repr(text) in str(info.value)
    for t in JobType:
        assert t.value in str(info.value)
    assert JobType.parse(text) is None


def test_unknown_status_strings_are_not_statuses() -> None:
    with pytest.raises(ValueError):
        JobStatus("DONE")
    with pytest.raises(ValueError):
        refusal("QUEUED", "DONE")
    with pytest.raises(ValueError):
        refusal("PAUSED", "RUNNING")
    assert not is_allowed(JobStatus.QUEUED, "DONE")  # type: ignore[arg-type]  # not a status: never allowed
