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
"""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path
from typing import IO, Sequence

import attrs
import jinja2

from exportkit import BatchResult, ConfigPath, Indicator, SinkContext, SinkError, SinkType, Withdrawal, hookimpl, setting

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

    def uses_standard_output(self) -> bool:
        """True when records go to standard output, which the core lets only one writer use."""
        return str(self.path) == "-"


def _environment() -> jinja2.Environment:
    # StrictUndefined: a misspelt field fails loudly instead of printing nothing.
    # No autoescape: this is text, not HTML.
    return jinja2.Environment(
        loader=jinja2.PackageLoader("exportkit_stdout", "templates"),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=False,
    )


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
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                self._stream = open(path, "a", encoding="utf-8", newline="")
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
                    lines.append(f"WITHDRAWN {w.source_id} ({w.reason})\n")
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
            return json.dumps(data, ensure_ascii=False, separators=(",", ":")) + "\n"
        if self.settings.format == "csv":
            return self._csv_row(data)
        return self._template.render(record=record, **data).rstrip("\n") + "\n"

    def _csv_row(self, data: dict) -> str:
        """One CSV row of :data:`CSV_COLUMNS` (missing columns empty), after the header if not written yet."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        if not self._header_written:
            writer.writerow(CSV_COLUMNS)
            self._header_written = True
        values = (data.get(c) for c in CSV_COLUMNS)
        writer.writerow(["|".join(v) if isinstance(v, list) else ("" if v is None else v) for v in values])
        return buffer.getvalue()

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
