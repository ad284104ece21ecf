"""This host's name as the fleet records it (run history, lock holders, worker names)."""

from __future__ import annotations

import os
import socket

__all__ = ["host_name", "HOSTNAME_VARIABLE"]

#: overrides the system host name (containers with random names, several "hosts" on one machine in tests)
HOSTNAME_VARIABLE = "EXPORTKIT_HOSTNAME"


def host_name() -> str:
    """``$EXPORTKIT_HOSTNAME``, else the system's host name."""
    return os.environ.get(HOSTNAME_VARIABLE, "").strip() or socket.gethostname()
