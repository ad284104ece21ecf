"""Batch results: one outcome per record, last report wins, validated statuses."""

from __future__ import annotations

import pytest

from exportkit.results import CONFIRMED, OUTCOME_STATUSES, BatchResult, Outcome, Withdrawal
from exportkit.testing import make_indicator


def test_helpers_record_each_status_with_reason_and_remote():
    record = make_indicator(source_id="1")
    result = BatchResult()
    result.accept(record, remote={"id": "j-1"})
    result.skip("2", "type not supported")
    result.reject(Withdrawal("3", "removed"), "refused")
    result.defer("4", "rate limited")
    assert [(o.source_id, o.status, o.reason) for o in result] == [
        ("1", "accepted", None),
        ("2", "skipped", "type not supported"),
        ("3", "rejected", "refused"),
        ("4", "deferred", "rate limited"),
    ]
    assert result.get("1").remote == {"id": "j-1"} and result.get("5") is None
    assert len(result) == 4
    assert repr(result) == "BatchResult({'accepted': 1, 'skipped': 1, 'rejected': 1, 'deferred': 1})"


def test_last_outcome_for_a_record_wins():
    result = BatchResult()
    result.defer("1", "first try failed")
    result.accept("1")
    assert len(result) == 1 and result.get("1").status == "accepted"


def test_remote_is_copied():
    remote = {"id": "a"}
    result = BatchResult()
    result.accept("1", remote=remote)
    remote["id"] = "changed"
    assert result.get("1").remote == {"id": "a"}


def test_build_from_outcomes():
    result = BatchResult([Outcome("1", "accepted"), Outcome("2", "skipped", "x"), Outcome("1", "rejected", "y")])
    assert [(o.source_id, o.status) for o in result] == [("1", "rejected"), ("2", "skipped")]


def test_unknown_status_is_refused():
    with pytest.raises(ValueError):
        Outcome("1", "lost")


def test_confirmed_statuses_let_the_checkpoint_move():
    assert CONFIRMED == {"accepted", "skipped", "rejected"}
    assert set(OUTCOME_STATUSES) - CONFIRMED == {"deferred"}


def test_withdrawal_defaults():
    w = Withdrawal("9", "removed")
    assert w.record is None and w.reason == "removed"
