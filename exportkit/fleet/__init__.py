"""Running instances on many hosts: PostgreSQL state, Celery workers and beat, schedules (docs/fleet.md)."""
