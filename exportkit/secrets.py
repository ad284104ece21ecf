"""Secret values: references, resolution, and redaction.

A secret setting holds a literal, ``env:NAME`` (an environment variable) or
``file:PATH`` (the file's content, surrounding white space removed). Resolved
values are wrapped in :class:`Secret`, whose ``repr`` and ``str`` never show
the value; code that must send it calls :meth:`Secret.reveal`.

Every revealed value is also remembered by :func:`register`, and
:class:`RedactingFilter` blanks remembered values out of log records, so a
secret that slips into an exception message still never reaches a log file.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Mapping

__all__ = ["Secret", "SecretReferenceError", "resolve", "is_reference", "latin1_problem", "register", "redact", "RedactingFilter"]

_lock = threading.Lock()
_known: set[str] = set()
MASK = "***"


class SecretReferenceError(ValueError):
    """An ``env:`` or ``file:`` reference that cannot be resolved (the message names it)."""


class Secret:
    """A value that prints as ``***``; :meth:`reveal` gives the value itself."""

    __slots__ = ("_value", "source")

    def __init__(self, value: str, source: str = "literal") -> None:
        self._value = value
        #: how the value was given: ``literal``, ``env:NAME`` or ``file:PATH``
        self.source = source
        register(value)

    def reveal(self) -> str:
        """Return the secret itself; call this only where it is sent."""
        return self._value

    def __repr__(self) -> str:
        return f"Secret({MASK}, source={self.source!r})"

    def __str__(self) -> str:
        return MASK

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", self._value))

    def __bool__(self) -> bool:
        return bool(self._value)


def latin1_problem(secret: Secret | None) -> str | None:
    """A problem text when ``secret`` cannot travel in an HTTP Basic ``Authorization`` header
    (only Latin-1 characters can); ``None`` when it can. Never shows the secret or where it breaks."""
    if secret is None:
        return None
    try:
        secret.reveal().encode("latin-1")
    except UnicodeEncodeError:
        return "holds a character that HTTP Basic authentication cannot carry (only Latin-1 characters work); the value is not shown"
    return None


def is_reference(text: str) -> bool:
    """True when ``text`` refers to a secret (``env:`` or ``file:``) instead of holding it."""
    return text.startswith(("env:", "file:"))


def resolve(text: str, *, environ: Mapping[str, str] | None = None, base_dir: Path | None = None) -> Secret:
    """Resolve a secret setting into a :class:`Secret`.

    :param text: a literal, ``env:NAME`` or ``file:PATH``.
    :param environ: the environment to read (default :data:`os.environ`).
    :param base_dir: folder that relative ``file:`` paths start from.
    :raises SecretReferenceError: the variable is unset or the file unreadable;
        the message names the reference, never a value.
    """
    env = os.environ if environ is None else environ
    if text.startswith("env:"):
        name = text[4:]
        if not name:
            raise SecretReferenceError("'env:' needs a variable name, like env:CTR_CLIENT_SECRET")
        if name not in env:
            raise SecretReferenceError(f"environment variable {name} is not set")
        return Secret(env[name], source=text)
    if text.startswith("file:"):
        path = Path(os.path.expanduser(text[5:]))
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        try:
            value = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise SecretReferenceError(f"cannot read secret file {path}: {exc.strerror or exc}") from None
        return Secret(value, source=f"file:{path}")
    return Secret(text)


def register(value: str) -> None:
    """Remember a secret value so that :func:`redact` hides it (values under 4 characters are not)."""
    if value and len(value) >= 4:
        with _lock:
            _known.add(value)


def redact(text: str) -> str:
    """Replace every remembered secret value in ``text`` with ``***``."""
    with _lock:
        values = sorted(_known, key=len, reverse=True)
    for value in values:
        if value in text:
            text = text.replace(value, MASK)
    return text


class RedactingFilter(logging.Filter):
    """Logging filter that blanks remembered secrets out of each record's message."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message or record.args:
            record.msg, record.args = cleaned, ()
        if record.exc_info and record.exc_info[1] is not None:
            # Render the traceback now, redacted, so handlers print the clean text.
            formatted = logging.Formatter().formatException(record.exc_info)
            record.exc_text = redact(formatted)
            record.exc_info = None
        return True
