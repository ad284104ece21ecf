"""A faithful ThreatQ API emulator on 127.0.0.1 for tests and demos.

``ThreatQEmulator(indicators=N, seed=S)`` generates a seeded data set and
serves it (context manager, ``.url``, ``.credentials``, control methods);
see :mod:`exportkit.threatq.emulator.server`.
"""

from exportkit.threatq.emulator.server import Credentials, ThreatQEmulator

__all__ = ["ThreatQEmulator", "Credentials"]
