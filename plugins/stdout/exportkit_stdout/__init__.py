"""The stdout sink: print records as JSON lines, CSV, text, or through your own jinja2 template.

This is the smallest complete exportkit sink, and the one to copy when you
write your own. It has the three parts every sink has:

1. a settings class (``StdoutSettings``), declared with
   :func:`exportkit.setting`, so that config validation, error messages and
   the configuration reference come for free;
2. a sink class (``StdoutSink``) whose ``@hookimpl`` methods receive batches;
3. the module-level ``exportkit_sink_types`` hook that tells exportkit the
   sink exists. ``pyproject.toml`` points the ``exportkit`` entry point at
   this module.

Configuration::

    [sinks.stdout]
    format = "jsonl"          # jsonl | csv | text
    # template = "my.j2"      # or render each record with your own template
    path = "-"                # "-" is standard output; a file path appends there

Outside text is made safe for where it lands: in csv and text output (and
your own templates) control characters such as ESC, BEL or a newline inside a
value are written as visible escapes (``\x1b``, ``\x07``, ``\n``), and a csv
cell that a spreadsheet would run as a formula (``=``, ``+``, ``-``, ``@``, tab,
CR first) gets a leading ``'`` unless ``csv_formulas = "keep"``. Templates run
in exportkit's sandbox. An output file is created 0600 (``file_mode``), never
through a symbolic link. A run killed while writing leaves half a line at the
end of the file; the next run cuts it off before appending (that batch was not
recorded, so it is written again whole).
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import stat
import sys
from pathlib import Path
from typing import IO, Any, Sequence

import attrs
import jinja2

from exportkit import BatchResult, ConfigPath, Indicator, SinkContext, SinkError, SinkType, Withdrawal, hookimpl, setting
from exportkit.errors import ExportkitError
from exportkit.escape import neutralise_formula, visible
from exportkit.files import open_private, private_folder
from exportkit.templates import sandboxed_environment

__version__ = "0.1.0"
__all__ = ["StdoutSettings", "StdoutSink", "exportkit_sink_types", "CSV_COLUMNS"]

#: columns of the csv format, in order (lists are joined with "|")
CSV_COLUMNS = ("source", "source_id", "type", "value", "status", "score", "tlp", "tags", "updated_at", "expires_at", "link")


def _check_template(path: str | None) -> str | None:
    """Fail config validation early for a template that is missing or does not compile."""
    if path is None:
        return None
    try:
        template = _environment().from_string(Path(path).expanduser().read_text(encoding="utf-8"))
    except OSError as exc:
        return f"cannot read template: {exc.strerror}"
    except jinja2.TemplateSyntaxError as exc:
        return f"template syntax error on line {exc.lineno}: {exc.message}"
    # Render a sample record so that a misspelt field fails here, before the run,
    # and not on every batch (a field used only in a branch not taken still fails at render).
    try:
        template.render(record=_SAMPLE, **_SAMPLE.to_dict())
    except jinja2.UndefinedError as exc:
        return f"template uses an unknown field: {exc.message}"
    except Exception:  # anything else depends on the data; render time reports it
        pass
    return None


_SAMPLE = Indicator.create(
    source="ThreatQ", source_id="1", value="203.0.113.1", type="ip", type_name="IP Address", status="Active",
    score=5.0, tlp="amber", tags=["sample"], attributes=[("name", "value")], sources=["feed"], description="sample",
    created_at="2024-01-01T00:00:00Z", updated_at="2024-01-01T00:00:00Z", expires_at="2030-01-01T00:00:00Z",
    link="https://tq.example.com/indicators/1/details",
)


@attrs.frozen
class StdoutSettings:
    """The ``[sinks.stdout]`` table."""

    format: str = setting("jsonl", help="Output format: one JSON object per line, CSV with a header, or one text line per record.", choices=("jsonl", "csv", "text"))
    template: ConfigPath | None = setting(None, help="A jinja2 template file rendered once per record (overrides format); fields are the record's, plus `record`. Relative to the config folder.", check=_check_template)
    path: ConfigPath = setting("-", help='Where to write: "-" is standard output, anything else a file that is appended to (relative to the config folder).')
    show_withdrawals: bool = setting(False, help="Also print a line when a record is withdrawn (expired or removed).")
    csv_formulas: str = setting(
        "neutralise",
        help="csv: a cell starting with = + - @ tab or CR gets a leading ' so that a spreadsheet shows it instead of running it (OWASP); \"keep\" writes it as it is.",
        choices=("neutralise", "keep"),
    )
    file_mode: str = setting("600", help="Octal permissions of an output file this sink creates (an existing file keeps its own).", check=lambda v: None if _octal_mode(v) is not None else "must be octal permissions like 600 or 640")

    def uses_standard_output(self) -> bool:
        """True when records go to standard output, which the core lets only one writer use."""
        return str(self.path) == "-"


def _drop_torn_tail(fd: int, window: int = 1 << 20) -> int:
    """Cut a regular file back to its last complete line; returns how many bytes were dropped.

    Every write of this sink ends in a newline, so a file that does not was
    cut short by a run killed while writing: that batch was never recorded and
    is written again, and appending after the half line would spoil the next
    one too. Only the last ``window`` bytes are searched; a longer unfinished
    tail (not this sink's file) is left alone.
    """
    info = os.fstat(fd)
    size = info.st_size
    if not stat.S_ISREG(info.st_mode) or size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return 0
    start = max(0, size - window)
    last = os.pread(fd, size - start, start).rfind(b"\n")
    if last < 0 and start > 0:
        return 0
    keep = start + last + 1  # 0 when the file holds no complete line at all
    os.ftruncate(fd, keep)
    return size - keep


def _octal_mode(text: str) -> int | None:
    try:
        mode = int(str(text), 8)
    except ValueError:
        return None
    return mode if 0 <= mode <= 0o777 else None


_UNSAFE_IN_JSON = re.compile("[\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def _json_escape(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


def _finalize(value: object) -> object:
    """Every ``{{ ... }}`` value: strings with control characters escaped visibly."""
    return visible(value) if isinstance(value, str) else value


def _environment() -> jinja2.Environment:
    # exportkit's sandbox: strict (a misspelt field fails loudly), no HTML escaping,
    # nothing in reach but the record. Control characters in values are escaped.
    return sandboxed_environment(loader=jinja2.PackageLoader("exportkit_stdout", "templates"), finalize=_finalize)


class StdoutSink:
    """Prints each accepted record; never rejects or defers (a closed pipe stops the sink)."""

    def __init__(self, settings: StdoutSettings) -> None:
        self.settings = settings
        self._stream: IO[str] | None = None
        self._owns_stream = False
        self._header_written = False
        env = _environment()
        if settings.template:
            self._template = env.from_string(Path(settings.template).expanduser().read_text(encoding="utf-8"))
        else:
            self._template = env.get_template("text.j2")

    @hookimpl
    def exportkit_open(self, context: SinkContext) -> None:
        if context.dry_run:
            return
        if self.settings.path == "-":
            self._stream = sys.stdout
        else:
            path = Path(self.settings.path).expanduser()
            mode = _octal_mode(self.settings.file_mode)
            try:
                if not path.parent.exists():
                    private_folder(path.parent, "output folder")
                fd = open_private(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, what="the output file", mode=0o600 if mode is None else mode)
                torn = _drop_torn_tail(fd)
                if torn:
                    context.logger.warning("%s ended in %d bytes of an unfinished line (a run stopped while writing); "
                                           "they are dropped, and that run's records are written again", path, torn)
                self._stream = os.fdopen(fd, "a", encoding="utf-8", newline="")
            except ExportkitError as exc:
                raise SinkError(str(exc), sink=context.sink) from None
            except OSError as exc:
                raise SinkError(f"cannot open {path}: {exc.strerror}", sink=context.sink) from None
            self._owns_stream = True
            # An existing csv file already has its header.
            self._header_written = path.stat().st_size > 0

    @hookimpl
    def exportkit_write(self, records: Sequence[Indicator], context: SinkContext) -> BatchResult | None:
        text = "".join(self.render(record) for record in records)
        self._emit(text, context)
        return None  # every record accepted

    @hookimpl
    def exportkit_withdraw(self, withdrawals: Sequence[Withdrawal], context: SinkContext) -> BatchResult | None:
        if self.settings.show_withdrawals:
            lines = []
            for w in withdrawals:
                if self.settings.template or self.settings.format == "text":
                    lines.append(f"WITHDRAWN {visible(w.source_id)} ({visible(w.reason)})\n")
                elif self.settings.format == "jsonl":
                    lines.append(json.dumps({"withdrawn": w.source_id, "reason": w.reason}) + "\n")
                else:  # csv: a row of the same columns, so the file stays one table
                    lines.append(self._csv_row({"source_id": w.source_id, "status": f"withdrawn: {w.reason}"}))
            self._emit("".join(lines), context)
        return None

    @hookimpl
    def exportkit_close(self, context: SinkContext, error: BaseException | None) -> None:
        if self._stream is not None:
            self._stream.flush()
            if self._owns_stream:
                self._stream.close()
        self._stream = None

    def render(self, record: Indicator) -> str:
        """One record as text, ending in a newline."""
        data = record.to_dict()
        if self.settings.template:
            return self._template.render(record=record, **data).rstrip("\n") + "\n"
        if self.settings.format == "jsonl":
            # json.dumps escapes C0 controls; C1 controls and bidi overrides would reach a
            # terminal that shows the file raw, so they become \u escapes too (still JSON).
            return _UNSAFE_IN_JSON.sub(_json_escape, json.dumps(data, ensure_ascii=False, separators=(",", ":"))) + "\n"
        if self.settings.format == "csv":
            return self._csv_row(data)
        return self._template.render(record=record, **data).rstrip("\n") + "\n"

    def _csv_row(self, data: dict[str, Any]) -> str:
        """One CSV row of :data:`CSV_COLUMNS` (missing columns empty), after the header if not written yet."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        if not self._header_written:
            writer.writerow(CSV_COLUMNS)
            self._header_written = True
        values = (data.get(c) for c in CSV_COLUMNS)
        writer.writerow([self._csv_cell(v) for v in values])
        return buffer.getvalue()

    def _csv_cell(self, value: object) -> object:
        """One cell: lists joined with "|", text escaped (control characters) and, unless
        ``csv_formulas = "keep"``, kept from being run as a formula. Numbers stay numbers."""
        if value is None:
            return ""
        if isinstance(value, list):
            value = "|".join(str(v) for v in value)
        if not isinstance(value, str):
            return value
        if self.settings.csv_formulas != "keep":
            value = neutralise_formula(value)  # before escaping: a leading tab or CR counts too
        return visible(value)

    def _emit(self, text: str, context: SinkContext) -> None:
        if context.dry_run or not text:
            return
        assert self._stream is not None, "exportkit_open was not called"
        try:
            self._stream.write(text)
            self._stream.flush()
        except BrokenPipeError:
            raise SinkError("output closed (broken pipe)", sink=context.sink) from None


@hookimpl
def exportkit_sink_types() -> list[SinkType]:
    return [SinkType("stdout", StdoutSettings, StdoutSink, "Prints records as JSON lines, CSV, text or a jinja2 template.")]
