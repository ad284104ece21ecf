"""exportkit: export threat-intelligence indicators from ThreatQ to CTIA and other sinks.

The public API for plugin authors is what this package re-exports, plus
these modules, documented in ``docs/writing-a-sink.md``:

* :mod:`exportkit.hookspecs`: the hooks and their contracts;
* :mod:`exportkit.http`: sessions, timeouts and the retry policy sinks should use
  (``make_session``, ``RetryPolicy``, ``RetriesExhausted``, ``retry_after_seconds``);
* :mod:`exportkit.errors`: the exceptions a sink raises;
* :mod:`exportkit.settings`: ``setting``, ``ConfigPath``, ``http_url``,
  ``normalise_choice``, and ``setting_info`` to read what ``setting`` declared;
* :mod:`exportkit.secrets`: ``Secret`` and ``redact``;
* :mod:`exportkit.testing`: the test kit.

Everything else is internal and may change.
"""

from exportkit.context import Holding, RunInfo, SinkContext, SinkType
from exportkit.errors import (
    ConfigError,
    ExportkitError,
    SinkAuthError,
    SinkError,
    TransientError,
)
from exportkit.hookspecs import NAME, hookimpl
from exportkit.records import CANONICAL_TYPES, Attribute, Indicator
from exportkit.results import BatchResult, Outcome, Withdrawal
from exportkit.secrets import Secret
from exportkit.settings import ConfigPath, setting, setting_info

# ThreatQ type name -> canonical type; the table belongs to the ThreatQ source.
from exportkit.threatq.vocabulary import canonical_type

import logging as _logging

__version__ = "0.1.0"

# Library convention: no output unless the application configures logging
# (the CLI does, per run); without this, warnings would reach stderr twice.
_logging.getLogger("exportkit").addHandler(_logging.NullHandler())

__all__ = [
    "NAME",
    "hookimpl",
    "Indicator",
    "Attribute",
    "CANONICAL_TYPES",
    "BatchResult",
    "Outcome",
    "Withdrawal",
    "SinkType",
    "SinkContext",
    "RunInfo",
    "Holding",
    "Secret",
    "setting",
    "setting_info",
    "ConfigPath",
    "ExportkitError",
    "ConfigError",
    "SinkError",
    "SinkAuthError",
    "TransientError",
    "__version__",
]
