"""Exceptions, sorted by what the caller should do.

::

    ExportkitError                 root; the CLI prints the message and exits 1, no traceback
      ConfigError(problems=[...])  bad or missing configuration; every problem listed at once
      PluginLoadError              an entry point failed to import or to describe itself
      SourceError                  the source (ThreatQ, a file) failed for the whole run
        SourceAuthError            credentials rejected
      SinkError(sink=...)          a sink must stop for this run (raised from a hook)
        SinkAuthError              credentials rejected by the sink's target
      TransientError               a network fault worth retrying later; a sink raising it
                                   has its remaining records deferred, not dead-lettered
      LockedError(pid=...)         another run of the same instance holds the lock (exit 4)
      StateVersionError            the state database was written by a newer release

Any other exception is a bug and keeps its traceback.

Messages never contain secrets: code that builds them uses the names of
settings and users, never passwords or tokens (see :mod:`exportkit.secrets`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    from exportkit.settings import Problem

__all__ = [
    "ExportkitError",
    "SourceUnavailable",
    "ConfigError",
    "PluginLoadError",
    "SourceError",
    "SourceAuthError",
    "SinkError",
    "SinkAuthError",
    "TransientError",
    "LockedError",
    "StateVersionError",
]


class ExportkitError(Exception):
    """Root of the errors exportkit handles; the message is shown to the user as is."""

    #: exit code the CLI uses when this error ends a run
    exit_code: int = 1


class ConfigError(ExportkitError):
    """Configuration that cannot be used; ``problems`` lists every problem found.

    :param message: one line saying what was being validated.
    :param problems: every problem, each naming file, key, what is wrong and what is allowed.
    """

    def __init__(self, message: str, problems: Sequence[Problem] = ()) -> None:
        self.problems = list(problems)
        super().__init__(message)

    def __str__(self) -> str:
        head = super().__str__()
        if not self.problems:
            return head
        lines = [f"{head} ({len(self.problems)} problem{'s' if len(self.problems) != 1 else ''}):"]
        lines += [f"  - {p}" for p in self.problems]
        return "\n".join(lines)


class PluginLoadError(ExportkitError):
    """A plugin could not be loaded; ``plugin`` names the entry point."""

    def __init__(self, message: str, *, plugin: str) -> None:
        self.plugin = plugin
        super().__init__(message)


class SourceError(ExportkitError):
    """The source failed in a way that ends the run (unreachable, bad collection, ...)."""


class SourceUnavailable(SourceError):
    """The source did not answer, or kept answering 5xx/429, after the retries.

    A passing fault: the run ends as partial (exit 3), the checkpoint does not
    move, and the next run tries again. Lasting failures (credentials, TLS, an
    unknown host name, a missing collection) stay :class:`SourceError` (exit 1).
    """

    exit_code = 3


class SourceAuthError(SourceError):
    """The source rejected the configured credentials."""


class SinkError(ExportkitError):
    """A sink cannot go on in this run; other sinks are not affected.

    :param message: what went wrong, without secrets.
    :param sink: the configured sink name.
    """

    def __init__(self, message: str, *, sink: str = "") -> None:
        self.sink = sink
        super().__init__(message)


class SinkAuthError(SinkError):
    """The sink's target rejected its credentials."""


class TransientError(ExportkitError):
    """A fault that may go away by itself (timeouts, 5xx, rate limits past their cap).

    Raised by a sink after its own retries are spent. The engine defers the
    records concerned to the next run and holds the checkpoint.
    """


class LockedError(ExportkitError):
    """Another process runs the same instance.

    :param pid: the process id written in the lock file, if it could be read.
    """

    exit_code = 4

    def __init__(self, message: str, *, pid: int | None) -> None:
        self.pid = pid
        super().__init__(message)


class StateVersionError(ExportkitError):
    """The instance state has a schema version this release does not know (a newer release wrote it).

    :param found: the version in the database.
    :param supported: the newest version this release understands.
    """

    def __init__(self, message: str, *, found: int, supported: int) -> None:
        self.found = found
        self.supported = supported
        super().__init__(message)
