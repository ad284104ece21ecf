"""exportkit sink for Cisco Threat Response (CTIA)."""

__version__ = "0.1.0"
