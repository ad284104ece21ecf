"""The contract suite has teeth: a good third-party-style sink passes it, each planted bug fails it.

``FolderSink`` is written the way a team outside the project would write a
file sink from the guide: one JSON file per live record in a folder, a lock
file while a run has it open, ``remote`` holding the file name so a
withdrawal without a record can still find it. Each variant below plants
one bug that authors really make; the suite must fail for every one of them,
and for the kinds it once missed, the test named here must be among the
failures. If a change to the suite makes a variant pass, the kit has lost a
tooth and this file says which.
"""

from __future__ import annotations

import inspect
import json
import os
from pathlib import Path
from typing import Any, Callable, Sequence
from urllib.parse import quote

import attrs
import pytest

from exportkit import BatchResult, ConfigPath, Indicator, SinkContext, SinkType, Withdrawal, hookimpl, setting
from exportkit.errors import SinkError
from exportkit.records import CANONICAL_TYPES
from exportkit.testing import SinkContract, SinkHarness

# --- the good sink ------------------------------------------------------------------------


@attrs.frozen
class FolderSettings:
    """``[sinks.folder]``."""

    folder: ConfigPath = setting(help="Folder that holds one JSON file per live record.", example="exported")
    indent: int = setting(0, help="JSON indentation of each file.", minimum=0, maximum=8)
    refuse_types: list[str] = setting([], help="Record types the target refuses.", choices=sorted(CANONICAL_TYPES))


LOCK = ".lock"


class FolderSink:
    """One JSON file per live record; a withdrawal removes the file named in ``remote``."""

    def __init__(self, settings: FolderSettings) -> None:
        self.settings = settings
        self.folder = Path(settings.folder)
        self.locked = False

    # hooks

    @hookimpl
    def exportkit_open(self, context: SinkContext) -> None:
        if context.dry_run:
            return  # a dry run creates nothing, not even the folder
        self.prepare()
        try:
            os.close(os.open(self.folder / LOCK, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except FileExistsError:
            raise SinkError(f"{self.folder} is in use by another run ({LOCK} exists)", sink=context.sink) from None
        self.locked = True

    @hookimpl
    def exportkit_check(self, context: SinkContext) -> list[str]:
        parent = next((p for p in (self.folder, *self.folder.parents) if p.exists()), None)
        if parent is None or not os.access(parent, os.W_OK):
            raise SinkError(f"cannot create files in {self.folder}", sink=context.sink)
        return [f"{self.folder} is writable" if parent == self.folder else f"{self.folder} will be created"]

    @hookimpl
    def exportkit_write(self, records: Sequence[Indicator], context: SinkContext) -> BatchResult:
        result = BatchResult()
        batch = self.accepted_part(records, result)
        for record in batch:
            name = self.file_name(record)
            data = json.dumps(record.to_dict(), ensure_ascii=False, indent=self.settings.indent or None)
            if not context.dry_run:
                self.store(name, data)
            result.accept(record, remote={"file": name})
        return result

    @hookimpl
    def exportkit_withdraw(self, withdrawals: Sequence[Withdrawal], context: SinkContext) -> BatchResult:
        for w in withdrawals:
            held = context.held(w.source_id)
            name = (held.remote or {}).get("file") if held is not None else None
            if name and not context.dry_run:
                self.remove(name)
        return BatchResult()  # every withdrawal accepted

    @hookimpl
    def exportkit_close(self, context: SinkContext, error: BaseException | None) -> None:
        if self.locked:
            (self.folder / LOCK).unlink(missing_ok=True)
            self.locked = False

    # the parts variants change

    def prepare(self) -> None:
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)

    def accepted_part(self, records: Sequence[Indicator], result: BatchResult) -> list[Indicator]:
        batch = []
        for record in records:
            if record.type in self.settings.refuse_types:
                result.reject(record, f"type {record.type} is refused by the target")
            else:
                batch.append(record)
        return batch

    def file_name(self, record: Indicator) -> str:
        return quote(record.source_id, safe="") + ".json"

    def store(self, name: str, data: str, encoding: str = "utf-8") -> None:
        tmp = self.folder / f".{name}.tmp"
        tmp.write_text(data, encoding=encoding)
        os.replace(tmp, self.folder / name)  # the file is complete or absent, never half-written

    def remove(self, name: str) -> None:
        (self.folder / name).unlink(missing_ok=True)


def read_folder(folder: Path) -> list[str]:
    """Source ids of the records stored in ``folder``, one per file."""
    if not folder.is_dir():
        return []
    return [json.loads(p.read_text(encoding="utf-8"))["source_id"] for p in sorted(folder.glob("*.json"))]


class FolderContract(SinkContract):
    """The contract for a folder sink class; ``sink_class`` and ``settings_class`` pick the variant."""

    sink_class: type = FolderSink
    settings_class: type = FolderSettings
    rejects_record = {"type_name": "CVE", "value": "CVE-2024-0001"}
    bad_settings = {"folder": 5, "indent": 99, "refuse_types": ["nonsense"]}
    bad_settings_problems = 3

    def sink_setup(self, tmp_path: Any) -> tuple[SinkType, dict[str, Any]]:
        sink_type = SinkType("folder", self.settings_class, self.sink_class, "One JSON file per record.")
        return sink_type, {"folder": "exported", "refuse_types": ["cve"]}  # relative: starts at the config folder

    def read_back(self, harness: SinkHarness) -> list[str]:
        return read_folder(Path(harness.settings.folder))


class TestFolderSinkContract(FolderContract):
    """The good sink, run by pytest like any sink's contract tests."""


# --- planted bugs -------------------------------------------------------------------------


class LosesLastRecord(FolderSink):
    def store(self, name: str, data: str, encoding: str = "utf-8") -> None:
        if json.loads(data)["source_id"] != "5":  # the last of five: "accepted", never stored
            super().store(name, data)


class DuplicatesOnResend(FolderSink):
    def file_name(self, record: Indicator) -> str:
        return f"{quote(record.source_id, safe='')}-{id(self)}.json"  # a new file per sink object


class KeysByValue(FolderSink):
    def file_name(self, record: Indicator) -> str:
        return quote(record.value, safe="")[:100] + ".json"  # two records with one value share a file


class RejectsWholeBatch(FolderSink):
    def accepted_part(self, records: Sequence[Indicator], result: BatchResult) -> list[Indicator]:
        if any(r.type in self.settings.refuse_types for r in records):
            for record in records:
                result.reject(record, "the batch holds a refused record")
            return []
        return list(records)


class AsciiOnly(FolderSink):
    def store(self, name: str, data: str, encoding: str = "utf-8") -> None:
        super().store(name, data, encoding="ascii")


class WithdrawKeepsFile(FolderSink):
    def remove(self, name: str) -> None:
        pass  # reported withdrawn, still live


class WithdrawNeedsRecord(FolderSink):
    @hookimpl
    def exportkit_withdraw(self, withdrawals: Sequence[Withdrawal], context: SinkContext) -> BatchResult:
        for w in withdrawals:
            if w.record is not None and not context.dry_run:  # a record gone from the collection has none
                self.remove(self.file_name(w.record))
        return BatchResult()


class KeepsLock(FolderSink):
    @hookimpl
    def exportkit_close(self, context: SinkContext, error: BaseException | None) -> None:
        if error is None:
            super().exportkit_close(context, error)  # forgets the lock after an error


class DryRunWrites(FolderSink):
    @hookimpl
    def exportkit_write(self, records: Sequence[Indicator], context: SinkContext) -> BatchResult:
        self.prepare()
        result = BatchResult()
        for record in self.accepted_part(records, result):
            name = self.file_name(record)
            self.store(name, json.dumps(record.to_dict(), ensure_ascii=False))
            result.accept(record, remote={"file": name})
        return result


class DryRunWithdraws(FolderSink):
    @hookimpl
    def exportkit_withdraw(self, withdrawals: Sequence[Withdrawal], context: SinkContext) -> BatchResult:
        for w in withdrawals:
            held = context.held(w.source_id)
            if held is not None and held.remote:
                self.remove(held.remote["file"])
        return BatchResult()


class DryRunCreatesFolder(FolderSink):
    @hookimpl
    def exportkit_open(self, context: SinkContext) -> None:
        self.prepare()  # before looking at dry_run
        if not context.dry_run:
            super().exportkit_open(context)


class CheckCreatesTheFolder(FolderSink):
    @hookimpl
    def exportkit_check(self, context: SinkContext) -> list[str]:
        self.prepare()  # "is it writable?" by making it
        return [f"{self.folder} is writable"]


class PersistsInClose(FolderSink):
    def __init__(self, settings: FolderSettings) -> None:
        super().__init__(settings)
        self.pending: dict[str, str] = {}

    def store(self, name: str, data: str, encoding: str = "utf-8") -> None:
        self.pending[name] = data  # saved in close, "to write once"

    @hookimpl
    def exportkit_close(self, context: SinkContext, error: BaseException | None) -> None:
        for name, data in self.pending.items():
            FolderSink.store(self, name, data)
        self.pending.clear()
        super().exportkit_close(context, error)


class RaisesInClose(FolderSink):
    def __init__(self, settings: FolderSettings) -> None:
        super().__init__(settings)
        self.stored = 0

    def store(self, name: str, data: str, encoding: str = "utf-8") -> None:
        super().store(name, data, encoding)
        self.stored += 1

    @hookimpl
    def exportkit_close(self, context: SinkContext, error: BaseException | None) -> None:
        super().exportkit_close(context, error)
        if self.stored:
            raise OSError(28, "No space left on device (flushing the index)")


class TruncatesOnOpen(FolderSink):
    def prepare(self) -> None:
        super().prepare()
        for old in self.folder.glob("*.json"):  # "start clean", as open(path, "w") would
            old.unlink()


@attrs.frozen
class UnboundedSettings:
    """The settings without the upper bound on ``indent``: a wrong value goes through."""

    folder: ConfigPath = setting(help="Folder.", example="exported")
    indent: int = setting(0, help="JSON indentation.", minimum=0)
    refuse_types: list[str] = setting([], help="Refused types.", choices=sorted(CANONICAL_TYPES))


# variant -> (sink class, settings class, a test that must be among the failures)
VARIANTS: dict[str, tuple[type, type, str]] = {
    "loses a record": (LosesLastRecord, FolderSettings, "test_write_delivers_every_record"),
    "duplicates on resend": (DuplicatesOnResend, FolderSettings, "test_resending_a_batch_creates_nothing_new"),
    "one item for two records with one value": (KeysByValue, FolderSettings, "test_duplicate_values_within_a_batch"),
    "rejects the whole batch": (RejectsWholeBatch, FolderSettings, "test_partial_rejection_is_reported_per_record"),
    "breaks on unicode": (AsciiOnly, FolderSettings, "test_unicode_and_very_long_values"),
    "withdrawal leaves the record live": (WithdrawKeepsFile, FolderSettings, "test_withdraw_held_records"),
    "withdrawal needs the record": (WithdrawNeedsRecord, FolderSettings, "test_withdraw_held_records"),
    "close after an error keeps the lock": (KeepsLock, FolderSettings, "test_close_is_called_after_an_error"),
    "settings check misses a bound": (FolderSink, UnboundedSettings, "test_settings_problems_are_listed_at_once"),
    "dry run writes": (DryRunWrites, FolderSettings, "test_dry_run_on_a_fresh_target_creates_nothing"),
    "dry run withdraws": (DryRunWithdraws, FolderSettings, "test_dry_run_changes_nothing_in_the_target"),
    "dry run creates the folder in open": (DryRunCreatesFolder, FolderSettings, "test_dry_run_on_a_fresh_target_creates_nothing"),
    "check creates the folder": (CheckCreatesTheFolder, FolderSettings, "test_dry_run_on_a_fresh_target_creates_nothing"),
    "persists only in close": (PersistsInClose, FolderSettings, "test_accepted_records_are_in_the_target_before_close"),
    "raises in close after accepting": (RaisesInClose, FolderSettings, "test_close_does_not_raise_after_accepting"),
    "loses records between two sink objects": (TruncatesOnOpen, FolderSettings, "test_a_new_sink_object_keeps_what_an_earlier_one_stored"),
}

CONTRACT_TESTS = sorted(name for name in dir(SinkContract) if name.startswith("test_"))


def run_contract(contract: type[SinkContract], folder: Path) -> dict[str, str]:
    """Run every contract test of ``contract`` (each with a fresh folder); failing test -> why."""
    failures: dict[str, str] = {}
    for name in CONTRACT_TESTS:
        tmp = folder / name
        tmp.mkdir(parents=True)
        test: Callable[[Path], None] = getattr(contract(), name)
        try:
            test(tmp)
        except Exception as exc:  # AssertionError, or whatever the sink raised
            failures[name] = f"{type(exc).__name__}: {exc}".splitlines()[0]
    return failures


def contract_for(sink_class: type, settings_class: type) -> type[FolderContract]:
    return type(f"Contract{sink_class.__name__}", (FolderContract,), {"sink_class": sink_class, "settings_class": settings_class})


def test_the_mutation_runner_sees_every_contract_test() -> None:
    # The runner calls test methods with tmp_path only; a contract test that needs
    # another fixture would make every variant "fail" for the wrong reason.
    assert len(CONTRACT_TESTS) >= 14
    for name in CONTRACT_TESTS:
        assert list(inspect.signature(getattr(SinkContract, name)).parameters) == ["self", "tmp_path"], name


def test_the_good_sink_passes_every_contract_test(tmp_path: Path) -> None:
    assert run_contract(FolderContract, tmp_path) == {}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_each_planted_bug_fails_the_contract(variant: str, tmp_path: Path) -> None:
    sink_class, settings_class, expected = VARIANTS[variant]
    failures = run_contract(contract_for(sink_class, settings_class), tmp_path)
    assert failures, f"the contract suite passed a sink that {variant}"
    assert expected in failures, f"{variant}: expected {expected} to fail; failures: {failures}"
