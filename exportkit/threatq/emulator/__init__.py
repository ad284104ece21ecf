"""A faithful ThreatQ API emulator on 127.0.0.1 for tests and demos.

``ThreatQEmulator(indicators=N, seed=S)`` generates a seeded data set and
serves it (context manager, ``.url``, ``.credentials``, control methods);
see :mod:`exportkit.threatq.emulator.server`. ``realistic=True`` (and the
``exportkit emulate threatq`` command, unless ``--lenient``) turns on the
behaviours of the real service (:mod:`~exportkit.threatq.emulator.behaviour`).
"""

from exportkit.threatq.emulator.behaviour import REALISTIC, Behaviour
from exportkit.threatq.emulator.server import Credentials, ThreatQEmulator

__all__ = ["ThreatQEmulator", "Credentials", "Behaviour", "REALISTIC"]
