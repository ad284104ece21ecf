"""Logging: one rotated file per instance, every line tagged with instance, sink and run id.

``-ll DIR`` writes ``DIR/<instance>.log`` (rotated at 10 MB, 5 files kept);
``-ll stdout`` writes to standard output. ``-v 1/2/3`` selects warning, info,
debug. Every handler carries :class:`~exportkit.secrets.RedactingFilter`, so
a secret that reaches a message is blanked before it is written, and
:class:`EscapingFilter`, so a message is always one line with no control
characters. The log folder is created 0700 and refused when others may write
to it; every log file (rotated ones too) is 0600 and never a followed link.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import os
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from exportkit.errors import ExportkitError
from exportkit.escape import visible
from exportkit.files import open_private, private_folder
from exportkit.secrets import RedactingFilter

__all__ = [
    "configure_logging",
    "run_logger",
    "EscapingFilter",
    "JsonFormatter",
    "PrivateRotatingFileHandler",
    "LEVELS",
    "LOG_FORMAT",
    "LOG_FORMATS",
]

LEVELS = {1: logging.WARNING, 2: logging.INFO, 3: logging.DEBUG}
LOG_FORMAT = "%(asctime)s %(levelname)s [%(instance)s/%(sink)s run=%(run_id)s] %(name)s: %(message)s"
#: the values of ``--log-format``
LOG_FORMATS = ("text", "json")
ROOT = "exportkit"


class PrivateRotatingFileHandler(logging.handlers.RotatingFileHandler):
    """A rotated log whose every file (the current one and each new one after a rollover) is
    opened without following a link and created 0600, whatever the umask."""

    def _open(self):  # type: ignore[no-untyped-def]
        fd = open_private(self.baseFilename, os.O_WRONLY | os.O_APPEND | os.O_CREAT, what="the log file")
        return os.fdopen(fd, "a", encoding=self.encoding, errors=self.errors)


class EscapingFilter(logging.Filter):
    """Make every message one line of plain text: control characters (newlines, ESC, BEL, ...)
    become visible escapes, so outside text (a server's error, an indicator value) can neither
    forge a log line nor drive the terminal. Tracebacks keep their lines."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        escaped = visible(message)
        if escaped != message or record.args:
            record.msg, record.args = escaped, ()
        if record.exc_text:  # rendered (and redacted) by RedactingFilter: keep its lines, escape the rest
            record.exc_text = "\n".join(visible(line) for line in record.exc_text.split("\n"))
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log shippers: ``time`` (ISO 8601, UTC), ``level``,
    ``instance``, ``sink``, ``run_id``, ``logger``, ``message`` and, when there is one,
    ``exception``. The filters have already redacted secrets and escaped control characters."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "instance": getattr(record, "instance", "-"),
            "sink": getattr(record, "sink", "-"),
            "run_id": getattr(record, "run_id", "-"),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            data["exception"] = record.exc_text
        return json.dumps(data, ensure_ascii=False)


class _Defaults(logging.Filter):
    """Fill the tag fields for lines logged outside a run (plugin loading, config)."""

    def __init__(self, instance: str) -> None:
        super().__init__()
        self.instance = instance

    def filter(self, record: logging.LogRecord) -> bool:
        for key, default in (("instance", self.instance), ("sink", "-"), ("run_id", "-")):
            if not hasattr(record, key):
                setattr(record, key, default)
        return True


def configure_logging(instance: str, location: str | None, verbosity: int, *, log_format: str = "text") -> logging.Handler | None:
    """Send the ``exportkit`` logger's lines to ``location`` at the chosen verbosity.

    :param instance: the instance name (file name and default tag).
    :param location: a folder, ``"stdout"``, or ``None`` for no log output.
    :param verbosity: 1 (warning), 2 (info) or 3 (debug).
    :param log_format: ``"text"`` (:data:`LOG_FORMAT`) or ``"json"`` (:class:`JsonFormatter`).
    :returns: the installed handler (so callers and tests can remove it).
    """
    logger = logging.getLogger(ROOT)
    logger.setLevel(LEVELS.get(verbosity, logging.WARNING))
    logger.propagate = False
    for old in list(logger.handlers):
        if getattr(old, "_exportkit", False):
            logger.removeHandler(old)
            old.close()
    if location is None:
        return None
    handler: logging.Handler
    if location == "stdout":
        handler = logging.StreamHandler(sys.stdout)
    else:
        folder = Path(location).expanduser()
        path = folder / f"{instance}.log"
        private_folder(folder, "log folder")
        try:
            handler = PrivateRotatingFileHandler(path, maxBytes=10 * 1024 * 1024, backupCount=5, encoding="utf-8")
        except OSError as exc:
            raise ExportkitError(f"cannot write the log file {path}: {exc.strerror or exc}") from None
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(LOG_FORMAT))
    handler.addFilter(_Defaults(instance))
    handler.addFilter(RedactingFilter())
    handler.addFilter(EscapingFilter())
    setattr(handler, "_exportkit", True)  # marks the handlers this function owns
    logger.addHandler(handler)
    return handler


if TYPE_CHECKING:
    _Adapter = logging.LoggerAdapter[logging.Logger]
else:  # LoggerAdapter is subscriptable at run time only from Python 3.11 on
    _Adapter = logging.LoggerAdapter


class _RunAdapter(_Adapter):
    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        kwargs["extra"] = {**self.extra, **kwargs.get("extra", {})}  # type: ignore[dict-item]
        return msg, kwargs


def run_logger(name: str, *, instance: str, run_id: str, sink: str = "-") -> logging.LoggerAdapter[Any]:
    """A logger under ``exportkit`` whose lines carry instance, sink and run id."""
    return _RunAdapter(logging.getLogger(f"{ROOT}.{name}"), {"instance": instance, "sink": sink, "run_id": run_id})
