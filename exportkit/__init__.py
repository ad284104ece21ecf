"""exportkit: export threat-intelligence indicators from ThreatQ to CTIA and other sinks.

The public API for plugin authors is re-exported here; everything else is
internal and may change.
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
from exportkit.records import CANONICAL_TYPES, Attribute, Indicator, canonical_type
from exportkit.results import BatchResult, Outcome, Withdrawal
from exportkit.secrets import Secret
from exportkit.settings import ConfigPath, setting

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
    "canonical_type",
    "BatchResult",
    "Outcome",
    "Withdrawal",
    "SinkType",
    "SinkContext",
    "RunInfo",
    "Holding",
    "Secret",
    "setting",
    "ConfigPath",
    "ExportkitError",
    "ConfigError",
    "SinkError",
    "SinkAuthError",
    "TransientError",
    "__version__",
]
