"""ThreatQ: API client, Data Collections, normalisation, and an emulator."""
