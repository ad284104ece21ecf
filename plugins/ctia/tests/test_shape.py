"""The warning before a change of the judgement-shaping settings supersedes the held judgements."""

from __future__ import annotations

from exportkit.context import Holding
from exportkit_ctia.plugin import CtiaSink
from exportkit_ctia.shape import STORE_KEY, judgement_shape, remember_shape, shape_changes, supersede_warning

from .conftest import Harness, make_record


def harness_for(settings) -> Harness:
    return Harness(CtiaSink(settings))


def test_only_the_shaping_settings_count(settings):
    before = judgement_shape(settings())
    assert shape_changes(before, settings(reason="other {{ value }}", feed="F")) == []
    assert shape_changes(before, settings(confidence="Medium", priority=50)) == ["confidence High -> Medium", "priority 85 -> 50"]
    assert shape_changes(None, settings(confidence="Medium")) == [], "nothing remembered yet: nothing to compare"


def test_the_warning_names_the_change_the_count_and_the_cost(settings):
    h = harness_for(settings())
    context = h.context()
    remember_shape(context, settings())
    assert supersede_warning(context, settings(severity="Low")) is None, "nothing held, nothing to supersede"
    for i in range(1, 2501):
        h.holdings[str(i)] = Holding(f"h{i}", {"judgement_id": f"j{i}"})
    warning = supersede_warning(h.context(), settings(severity="Low", request_budget=1000))
    assert warning is not None
    assert "severity High -> Low" in warning and "each of the 2500 held judgements" in warning
    # 2500 expiries plus 2 bundles of up to 2000 judgements: 2502 requests, 3 runs of 1000.
    assert "about 2502 CTIA requests" in warning and "3 run(s)" in warning
    assert supersede_warning(h.context(), settings()) is None


def test_a_dry_run_notes_the_warning_and_a_real_run_remembers_the_new_values(settings, ctia, harness):
    h = harness()
    h.run([make_record("192.0.2.1")])
    assert h.store.get(STORE_KEY)["confidence"] == "High"
    changed = harness(confidence="Low")
    changed.store, changed.holdings = h.store, h.holdings
    changed.run([], dry_run=True)
    assert "confidence High -> Low" in changed.reports[-1]["settings_change"]
    assert h.store.get(STORE_KEY)["confidence"] == "High", "a dry run remembers nothing"
    changed.run([])
    assert h.store.get(STORE_KEY)["confidence"] == "Low"
