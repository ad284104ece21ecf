"""The contract suite every sink's tests inherit (empty batches, unicode, re-sends, withdrawals, ...)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import attrs

from exportkit.context import SinkType
from exportkit.errors import ConfigError
from exportkit.results import CONFIRMED, Outcome, Withdrawal
from exportkit.settings import parse_settings
from exportkit.testing.factories import make_indicator, make_indicators
from exportkit.testing.harness import SinkHarness
from exportkit.testing.target import folder_state

__all__ = ['SinkContract']

# --- The contract suite --------------------------------------------------------------

_UNDECLARED: Any = object()


class SinkContract:
    """Standard tests every sink should pass; inherit in a ``Test...`` class (pytest runs them).

    The subclass must provide:

    * :meth:`sink_setup` ``(tmp_path) -> (sink_type, raw_settings)``; the same
      ``tmp_path`` must give the same target, because the tests build several
      sink objects on one target (a second run, a reader). Relative paths in
      ``ConfigPath`` settings start at ``tmp_path`` (the harness's config folder);
    * :meth:`read_back` ``(harness) -> list of source ids`` live in the target
      (one entry per stored item, so a duplicate shows). It gets a harness
      around a *fresh* sink object on the same target, never opened and never
      the one that wrote: read what the target holds (the file, the server),
      not what a sink object keeps in memory. Return ``None`` when the target
      cannot be read back: the outcome checks still run, but the tests that
      are about the target (durability, two sink objects) then fail and say
      so, since they cannot pass without looking;
    * :attr:`rejects_record`: ``make_indicator`` overrides for a record the
      sink rejects, or ``None`` to declare that it rejects nothing (the test
      then holds it to that with edge-case records);
    * :attr:`bad_settings` and :attr:`bad_settings_problems`: a settings table
      with mistakes and how many problems it holds (count required keys it
      leaves out too), or ``None`` for a sink without settings. The test adds
      one misspelt key of its own and expects exactly one more problem.

    It may override :meth:`target_state` ``(tmp_path)``, a value that is equal
    exactly when nothing in the target changed (default: every folder and file
    under ``tmp_path`` with its content, plus :meth:`read_back`). Override it
    when the target lives elsewhere (a server): the dry-run tests compare it
    before and after each hook.

    What the suite holds every sink to, beyond per-record outcomes:

    * **accepted means durable**: once ``exportkit_write`` (or
      ``exportkit_withdraw``) returns, an accepted record is in the target (or
      gone from it), visible to any other sink object; ``exportkit_close``
      only releases resources and does not raise;
    * **sink objects share the target**: a new sink object (the next run)
      keeps what the earlier ones stored;
    * **a dry run changes nothing in the target**, in any hook, on a fresh
      target or on one that holds records (no folders or files created in
      ``open``, no write, no withdrawal).

    Nothing is skipped silently: leaving one of the attributes undeclared fails
    the tests that need it.
    """

    rejects_record: Mapping[str, Any] | None = _UNDECLARED
    bad_settings: Mapping[str, Any] | None = _UNDECLARED
    bad_settings_problems: int = 0

    # --- what the subclass provides -------------------------------------------------

    def sink_setup(self, tmp_path: Any) -> tuple[SinkType, Mapping[str, Any]]:
        raise NotImplementedError(f"{type(self).__name__} must define sink_setup(tmp_path) -> (sink_type, raw settings)")

    def read_back(self, harness: SinkHarness) -> Sequence[str] | None:
        raise NotImplementedError(
            f"{type(self).__name__} must define read_back(harness) -> list of source ids live in the target, or None"
        )

    def target_state(self, tmp_path: Any) -> Any:
        """A value equal exactly when nothing in the target changed (see the class docstring)."""
        return folder_state(tmp_path), self._held_in_target(tmp_path)

    # --- helpers ----------------------------------------------------------------------

    def harness(self, tmp_path: Any, **kwargs: Any) -> SinkHarness:
        """A new harness for the subclass's sink (each call builds a new sink object).

        ``tmp_path`` is also the config folder, where relative ``ConfigPath`` settings start.
        """
        sink_type, raw = self.sink_setup(tmp_path)
        kwargs.setdefault("config_dir", Path(tmp_path))
        return SinkHarness.from_type(sink_type, raw, **kwargs)

    def _held_in_target(self, tmp_path: Any) -> list[str] | None:
        """What :meth:`read_back` finds, through a fresh sink object on the target of ``tmp_path``."""
        found = self.read_back(self.harness(tmp_path))
        return None if found is None else list(found)

    def _readable_target(self, tmp_path: Any, when: str) -> list[str]:
        found = self._held_in_target(tmp_path)
        if found is None:
            raise AssertionError(
                f"read_back returned None {when}: this test checks what the target holds and cannot pass without "
                "reading it; implement read_back (or override this test and say why the target cannot be read)"
            )
        return found

    @staticmethod
    def _declared(cls: type, attribute: str) -> Any:
        value = getattr(cls, attribute)
        if value is _UNDECLARED:
            raise AssertionError(f"{cls.__name__} must declare {attribute} (None means: not applicable to this sink)")
        return value

    @staticmethod
    def _assert_confirmed(outcomes: Sequence[Outcome], expected_ids: Sequence[str]) -> None:
        assert [o.source_id for o in outcomes] == list(expected_ids)
        bad = [(o.source_id, o.status, o.reason) for o in outcomes if o.status not in CONFIRMED or o.status == "rejected"]
        assert not bad, f"records not delivered: {bad}"

    # --- the tests ----------------------------------------------------------------------

    def test_open_and_close_without_records(self, tmp_path: Any) -> None:
        harness = self.harness(tmp_path)
        with harness.session():
            assert harness.write([]) == []  # an empty batch is never handed to the sink
            assert harness.withdraw([]) == []
        assert harness.closed and harness.close_error is None
        held = self._held_in_target(tmp_path)
        if held is not None:
            assert held == []

    def test_write_delivers_every_record(self, tmp_path: Any) -> None:
        records = make_indicators(5)
        harness = self.harness(tmp_path)
        with harness.session():
            outcomes = harness.write(records)
        self._assert_confirmed(outcomes, [r.source_id for r in records])
        for record, outcome in zip(records, outcomes):
            if outcome.status == "accepted":
                holding = harness.held(record)
                assert holding is not None and holding.content_hash == record.content_hash
        held = self._held_in_target(tmp_path)
        if held is not None:
            accepted = {o.source_id for o in outcomes if o.status == "accepted"}
            assert sorted(set(held)) == sorted(accepted)

    def test_unicode_and_very_long_values(self, tmp_path: Any) -> None:
        records = [
            make_indicator(source_id="1", type_name="FQDN", value="пример.испытание", description="Ünïcödé — 日本語 — עברית — 🛰️"),
            make_indicator(source_id="2", type_name="URL", value="https://example.com/" + "ä" * 5000, tags=("tag-" + "x" * 2000, "ключ")),
            make_indicator(source_id="3", type_name="String", value="line one\nline two\t\"quoted\" \\ back", description="x" * 100_000),
        ]
        harness = self.harness(tmp_path)
        with harness.session():
            outcomes = harness.write(records)
        assert [o.source_id for o in outcomes] == ["1", "2", "3"]
        assert all(o.status != "deferred" for o in outcomes), outcomes
        held = self._held_in_target(tmp_path)
        if held is not None:
            assert sorted(set(held)) == sorted(o.source_id for o in outcomes if o.status == "accepted")

    def test_duplicate_values_within_a_batch(self, tmp_path: Any) -> None:
        # Two source records with one value (ThreatQ keeps one per type, sources differ);
        # each needs its own outcome and its own holding.
        records = [
            make_indicator(source_id="1", value="198.51.100.7"),
            make_indicator(source_id="2", value="198.51.100.7", score=2),
            make_indicator(source_id="3", value="198.51.100.8"),
        ]
        harness = self.harness(tmp_path)
        with harness.session():
            outcomes = harness.write(records)
        self._assert_confirmed(outcomes, ["1", "2", "3"])
        accepted = {o.source_id for o in outcomes if o.status == "accepted"}
        assert {sid for sid in ("1", "2", "3") if harness.held(sid)} == accepted
        held = self._held_in_target(tmp_path)
        if held is not None:  # one stored item per record, even when two share a value
            assert sorted(held) == sorted(accepted), f"the target holds {sorted(held)} for accepted {sorted(accepted)}"

    def test_partial_rejection_is_reported_per_record(self, tmp_path: Any) -> None:
        overrides = self._declared(type(self), "rejects_record")
        if overrides is None:
            # The sink declares that no record is refused for its content alone:
            # hold it to that with records at the edges (odd types, empty
            # optional fields, an expired-looking date), every one confirmed, none dead-lettered.
            edge = [
                make_indicator(source_id="1", type="cve", type_name="CVE", value="CVE-2024-0001"),
                make_indicator(source_id="2", type="other", type_name="Custom Thing", value="x", tags=(), score=None, tlp=None),
                make_indicator(source_id="3", value="198.51.100.9", description="multi\nline\tand ünïcode"),
            ]
            harness = self.harness(tmp_path)
            with harness.session():
                outcomes = harness.write(edge)
            assert all(o.status in ("accepted", "skipped") for o in outcomes), outcomes
            assert harness.dead_letters == {}
            return
        good = make_indicators(2)
        bad = make_indicator(**{"source_id": "999", **dict(overrides)})
        harness = self.harness(tmp_path)
        with harness.session():
            outcomes = harness.write([good[0], bad, good[1]])
        by_id = {o.source_id: o for o in outcomes}
        assert by_id["999"].status == "rejected" and by_id["999"].reason
        assert by_id["1"].status in ("accepted", "skipped") and by_id["2"].status in ("accepted", "skipped")
        assert "999" in harness.dead_letters and harness.held("999") is None
        held = self._held_in_target(tmp_path)
        if held is not None:
            assert "999" not in held

    def test_resending_a_batch_creates_nothing_new(self, tmp_path: Any) -> None:
        records = make_indicators(4)
        first = self.harness(tmp_path)
        with first.session():
            first.write(records)
        held_before = self._held_in_target(tmp_path)
        hashes = {sid: h.content_hash for sid, h in first.holdings.data.items()}
        # A new sink object (the next run) gets the same batch again, with the holdings of the first.
        second = self.harness(tmp_path, store=first.store, holdings=first.holdings)
        with second.session():
            outcomes = second.write(records)
        self._assert_confirmed(outcomes, [r.source_id for r in records])
        assert {sid: h.content_hash for sid, h in second.holdings.data.items()} == hashes
        held_after = self._held_in_target(tmp_path)
        if held_before is not None:
            assert sorted(held_after or []) == sorted(held_before)

    def test_withdraw_held_records(self, tmp_path: Any) -> None:
        records = make_indicators(3)
        harness = self.harness(tmp_path)
        with harness.session():
            written = harness.write(records)
            withdrawals = [
                Withdrawal("1", "expired", attrs.evolve(records[0], status="Expired")),
                Withdrawal("2", "removed", None),
            ]
            outcomes = harness.withdraw(withdrawals)
        assert all(o.status == "accepted" for o in written if o.source_id in ("1", "2")), written
        self._assert_confirmed(outcomes, ["1", "2"])
        assert harness.held("1") is None and harness.held("2") is None
        assert harness.held("3") is not None
        held = self._held_in_target(tmp_path)
        if held is not None:
            assert sorted(set(held)) == ["3"]

    def test_close_is_called_after_an_error(self, tmp_path: Any) -> None:
        class Interrupted(Exception):
            pass

        records = make_indicators(2)
        harness = self.harness(tmp_path)
        try:
            with harness.session():
                harness.write(records)
                raise Interrupted("the run stopped (simulated)")
        except Interrupted:
            pass
        else:  # pragma: no cover - the block always raises
            raise AssertionError("unreachable")
        # close received the error and did not raise (a raising close would replace Interrupted).
        assert harness.closed and isinstance(harness.close_error, Interrupted)
        # The sink let go of its resources: a new sink object on the same target works.
        again = self.harness(tmp_path)
        with again.session():
            outcomes = again.write(make_indicators(1, start=10))
        self._assert_confirmed(outcomes, ["10"])

    def test_settings_problems_are_listed_at_once(self, tmp_path: Any) -> None:
        bad = self._declared(type(self), "bad_settings")
        sink_type, good = self.sink_setup(tmp_path)
        # The good settings parse; a misspelt extra key is always one more problem.
        SinkHarness.parse(sink_type, good)
        expected = (self.bad_settings_problems if bad is not None else 0) + 1
        raw = {**dict(bad or {}), "no_such_setting_xyz": True}
        _, problems = parse_settings(sink_type.settings_class, raw, file="<test>", section=f"sinks.{sink_type.name}")
        assert len(problems) == expected, "\n".join(map(str, problems))
        assert all(p.key.startswith(f"sinks.{sink_type.name}.") for p in problems)
        assert any(p.key.endswith("no_such_setting_xyz") for p in problems)
        try:
            SinkHarness.parse(sink_type, raw)
        except ConfigError as exc:
            assert len(exc.problems) == expected
        else:
            raise AssertionError("bad settings were accepted")

    def test_dry_run_on_a_fresh_target_creates_nothing(self, tmp_path: Any) -> None:
        records = make_indicators(3)
        before = self.target_state(tmp_path)
        harness = self.harness(tmp_path, dry_run=True)
        steps = [
            ("exportkit_open", harness.open),
            ("exportkit_check", harness.check),  # `exportkit check` runs with a dry-run context too
            ("exportkit_write", lambda: harness.write(records)),
            ("exportkit_withdraw", lambda: harness.withdraw([Withdrawal("1", "removed", None)])),
            ("exportkit_close", lambda: harness.close(None)),
        ]
        results = self._unchanged_through(tmp_path, before, steps)
        outcomes = results["exportkit_write"] + results["exportkit_withdraw"]
        assert [o.source_id for o in results["exportkit_write"]] == ["1", "2", "3"]
        assert all(o.status != "deferred" for o in outcomes), outcomes
        assert harness.holdings.data == {} and harness.dead_letters == {}

    def test_dry_run_changes_nothing_in_the_target(self, tmp_path: Any) -> None:
        # A target that holds records (a real run first), then a dry run that would
        # change one, add two and withdraw two of them: nothing may change, in any hook.
        records = make_indicators(3)
        first = self.harness(tmp_path)
        with first.session():
            written = first.write(records)
        self._assert_confirmed(written, ["1", "2", "3"])
        before = self.target_state(tmp_path)
        holdings = {sid: h for sid, h in first.holdings.data.items()}
        dry = self.harness(tmp_path, dry_run=True, store=first.store, holdings=first.holdings)
        batch = [attrs.evolve(records[0], score=1.0, description="changed"), *make_indicators(2, start=4)]
        withdrawals = [Withdrawal("2", "expired", attrs.evolve(records[1], status="Expired")), Withdrawal("3", "removed", None)]
        steps = [
            ("exportkit_open", dry.open),
            ("exportkit_write", lambda: dry.write(batch)),
            ("exportkit_withdraw", lambda: dry.withdraw(withdrawals)),
            ("exportkit_close", lambda: dry.close(None)),
        ]
        results = self._unchanged_through(tmp_path, before, steps)
        assert all(o.status != "deferred" for o in results["exportkit_write"] + results["exportkit_withdraw"])
        assert dry.holdings.data == holdings and dry.dead_letters == {}

    def _unchanged_through(self, tmp_path: Any, before: Any, steps: Sequence[tuple[str, Callable[[], Any]]]) -> dict[str, Any]:
        results = {}
        for hook, call in steps:
            results[hook] = call()
            after = self.target_state(tmp_path)
            assert after == before, f"the dry run changed the target in {hook}:\nbefore: {before!r}\nafter:  {after!r}"
        return results

    # --- accepted means durable -----------------------------------------------------

    def test_accepted_records_are_in_the_target_before_close(self, tmp_path: Any) -> None:
        records = make_indicators(4)
        harness = self.harness(tmp_path)
        harness.open()
        try:
            outcomes = harness.write(records)
            accepted = sorted(o.source_id for o in outcomes if o.status == "accepted")
            found = self._readable_target(tmp_path, "after exportkit_write")
            assert sorted(found) == accepted, (
                f"after exportkit_write returned, a fresh sink object reads back {sorted(found)} for accepted {accepted}: "
                "an accepted record must be stored when write returns, not in exportkit_close"
            )
            withdrawn = harness.withdraw([Withdrawal(accepted[0], "removed", None)])
            if withdrawn[0].status == "accepted":
                found = self._readable_target(tmp_path, "after exportkit_withdraw")
                assert accepted[0] not in found, "an accepted withdrawal must take effect when withdraw returns, not in exportkit_close"
        finally:
            harness.close(None)

    def test_close_does_not_raise_after_accepting(self, tmp_path: Any) -> None:
        for error in (None, RuntimeError("the run stopped (simulated)")):
            harness = self.harness(tmp_path)
            harness.open()
            outcomes = harness.write(make_indicators(3, start=1 if error is None else 10))
            assert any(o.status == "accepted" for o in outcomes), outcomes
            try:
                harness.close(error)
            except Exception as exc:
                raise AssertionError(
                    f"exportkit_close(error={error!r}) raised {type(exc).__name__}: {exc} after the sink had accepted records; "
                    "what was accepted must already be stored, so close only releases and must not raise"
                ) from exc

    def test_a_new_sink_object_keeps_what_an_earlier_one_stored(self, tmp_path: Any) -> None:
        first_batch, second_batch = make_indicators(3), make_indicators(2, start=4)
        first = self.harness(tmp_path)
        with first.session():
            accepted = [o.source_id for o in first.write(first_batch) if o.status == "accepted"]
        # The next run: a new sink object on the same target, with the holdings of the first.
        second = self.harness(tmp_path, store=first.store, holdings=first.holdings)
        second.open()
        try:
            found = self._readable_target(tmp_path, "after a second sink object opened")
            assert sorted(found) == sorted(accepted), f"a second sink object's exportkit_open lost records: {sorted(found)} of {sorted(accepted)}"
            accepted += [o.source_id for o in second.write(second_batch) if o.status == "accepted"]
            found = self._readable_target(tmp_path, "after the second sink object wrote")
            assert sorted(found) == sorted(accepted), f"the target holds {sorted(found)}; records accepted by both sink objects: {sorted(accepted)}"
        finally:
            second.close(None)
        found = self._readable_target(tmp_path, "after the second sink object closed")
        assert sorted(found) == sorted(accepted), f"the target holds {sorted(found)} after close; accepted: {sorted(accepted)}"
