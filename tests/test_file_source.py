"""The file source: JSONL records in source order, bad lines dead-lettered, last line wins."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from exportkit.errors import SourceError
from exportkit.file_source import SOURCE_TYPE, FileSettings, FileSource
from exportkit.records import Indicator
from exportkit.sources import BadRecord, source_types
from exportkit.testing import FIXED_TIME, make_indicator, make_indicators


def line(record: Indicator) -> str:
    return json.dumps(record.to_dict())


def source(tmp_path, lines, name=None) -> FileSource:
    (tmp_path / "records.jsonl").write_text("".join(f"{text}\n" for text in lines), encoding="utf-8")
    src = FileSource(FileSettings(path="records.jsonl", name=name), config_dir=tmp_path)
    src.open()
    return src


def ids(items):
    return [item.source_id for item in items]


def test_sorted_by_position_whatever_the_file_order(tmp_path):
    a, b, c = make_indicators(3)
    same_time_big_id = make_indicator(source_id="10", updated_at=a.updated_at)
    src = source(tmp_path, [line(c), line(same_time_big_id), line(a), line(b)])
    items = list(src.pull(None, None))
    assert ids(items) == ["1", "10", "2", "3"]
    assert items[0] == a
    assert src.total == 4


def test_equal_times_order_ids_as_records_do(tmp_path):
    at = make_indicator().updated_at
    wanted = ["9", "010", "11", "123456789012345678901234567890", "a-1", "b", "\u00e9"]
    records = [make_indicator(source_id=sid, updated_at=at) for sid in reversed(wanted)]
    items = list(source(tmp_path, [line(r) for r in records]).pull(None, None))
    assert ids(items) == wanted
    assert [r.source_id for r in sorted(records, key=lambda r: r.position)] == wanted, "the same order as Indicator.position"


def test_the_index_lives_on_disk_and_is_gone_after_the_pull(tmp_path, monkeypatch):
    import tempfile

    made: list[str] = []
    real = tempfile.TemporaryDirectory

    def spy(*args, **kwargs):
        folder = real(*args, **kwargs)
        made.append(folder.name)
        return folder

    monkeypatch.setattr(tempfile, "TemporaryDirectory", spy)
    src = source(tmp_path, [line(r) for r in make_indicators(5)])
    pulled = src.pull(None, None)
    next(pulled)
    from pathlib import Path

    assert len(made) == 1 and (Path(made[0]) / "index.sqlite").exists()
    assert len(list(pulled)) == 4
    assert not Path(made[0]).exists()


def test_window_is_since_inclusive_until_exclusive(tmp_path):
    records = make_indicators(5)  # updated at FIXED_TIME + 1s .. + 5s
    src = source(tmp_path, [line(r) for r in records])
    since = FIXED_TIME + timedelta(seconds=2)
    until = FIXED_TIME + timedelta(seconds=4)
    assert ids(src.pull(since, until)) == ["2", "3"]
    assert ids(src.pull(since, None)) == ["2", "3", "4", "5"]
    assert ids(src.pull(None, until)) == ["1", "2", "3"]


def test_last_line_wins_for_duplicate_ids(tmp_path):
    old = make_indicator(source_id="7", score=1, updated_at=FIXED_TIME)
    new = make_indicator(source_id="7", score=9, updated_at=FIXED_TIME + timedelta(hours=1))
    src = source(tmp_path, [line(old), line(make_indicator(source_id="8")), line(new)])
    items = list(src.pull(None, None))
    assert ids(items) == ["8", "7"] and items[1].score == 9


def test_last_line_wins_even_when_it_falls_outside_the_window(tmp_path):
    # The record's current version is outside the window: the stale one must not be pulled.
    old = make_indicator(source_id="7", score=1, updated_at=FIXED_TIME)
    new = make_indicator(source_id="7", score=9, updated_at=FIXED_TIME + timedelta(hours=2))
    src = source(tmp_path, [line(old), line(new)])
    assert ids(src.pull(None, FIXED_TIME + timedelta(hours=1))) == []
    assert [i.score for i in src.pull(FIXED_TIME, None)] == [9]


def test_malformed_lines_become_bad_records_and_the_pull_goes_on(tmp_path):
    good = make_indicators(2)
    unknown_key = {**make_indicator(source_id="5").to_dict(), "colour": "red"}
    src = source(tmp_path, [line(good[1]), "{not json", "", "[1, 2]", json.dumps(unknown_key), line(good[0])])
    items = list(src.pull(None, None))
    bad = [i for i in items if isinstance(i, BadRecord)]
    assert ids(i for i in items if isinstance(i, Indicator)) == ["1", "2"]
    assert [b.reason.split(":")[0] for b in bad] == ["line 2", "line 4", "line 5"]
    assert "not JSON" in bad[0].reason and bad[0].source_id is None
    assert "not a JSON object" in bad[1].reason
    assert "colour" in bad[2].reason and bad[2].source_id == "5" and bad[2].raw["colour"] == "red"
    assert src.total == 5


def test_bad_line_outside_the_window_is_left_for_its_own_pull(tmp_path):
    late = {**make_indicator(source_id="5", updated_at=FIXED_TIME + timedelta(days=1)).to_dict(), "x": 1}
    src = source(tmp_path, [json.dumps(late)])
    assert list(src.pull(None, FIXED_TIME)) == []
    assert len(list(src.pull(FIXED_TIME, None))) == 1


def test_source_name_overrides_each_record(tmp_path):
    src = source(tmp_path, [line(make_indicator())], name="Replay")
    (item,) = src.pull(None, None)
    assert item.source == "Replay"


def test_current_ids(tmp_path):
    a, b = make_indicators(2)
    src = source(tmp_path, [line(b), "garbage", line(a), line(b)])
    assert sorted(src.current_ids()) == ["1", "2"]
    assert src.check() == [f"file {tmp_path / 'records.jsonl'}: 2 records"]


def test_missing_file_is_a_source_error(tmp_path):
    src = FileSource(FileSettings(path="nope.jsonl"), config_dir=tmp_path)
    with pytest.raises(SourceError, match="does not exist"):
        src.open()


def test_absolute_path_and_registration(tmp_path):
    path = tmp_path / "abs.jsonl"
    path.write_text(line(make_indicator()) + "\n")
    src = SOURCE_TYPE.factory(FileSettings(path=str(path)), config_dir=tmp_path / "elsewhere")
    assert src.path == path and ids(src.pull(None, None)) == ["1"]
    assert source_types()["file"] is SOURCE_TYPE


def test_stdout_jsonl_is_what_the_file_source_reads(tmp_path):
    from exportkit.testing import SinkHarness
    from exportkit_stdout import exportkit_sink_types

    (sink_type,) = exportkit_sink_types()
    records = make_indicators(3, tags=("ä", "b"), description="☃")
    SinkHarness.from_type(sink_type, {"path": str(tmp_path / "records.jsonl")}).send(records)
    src = FileSource(FileSettings(path="records.jsonl"), config_dir=tmp_path)
    assert list(src.pull(None, None)) == records


def test_a_pull_left_early_closes_its_index_quietly(tmp_path):
    import gc
    import sys

    import threading

    src = source(tmp_path, [line(r) for r in make_indicators(5)])
    pulled = src.pull(None, None)
    # The engine's pull thread reads; the generator may be finalised in another thread.
    reader = threading.Thread(target=lambda: next(pulled))
    reader.start()
    reader.join()
    unraisable: list = []
    old, sys.unraisablehook = sys.unraisablehook, unraisable.append
    try:
        del pulled
        gc.collect()
    finally:
        sys.unraisablehook = old
    assert unraisable == [], "nothing may fail while the generator is closed"
