"""Bodies and signatures: pure functions, no network, no clock (times are passed in).

Default body of a batch of records (built with :func:`json.dumps`)::

    {"instance": "prod", "run_id": "...", "sink": "webhook", "records": [<Indicator.to_dict()>, ...]}

Body of a batch of withdrawals (always this form, also with a template)::

    {"instance": "prod", "run_id": "...", "sink": "webhook",
     "withdrawn": [{"source_id": "42", "reason": "expired", "type": "ip", "value": "203.0.113.9"}, ...]}

Signature, when a secret is set: ``sha256=<hex>``, the HMAC-SHA256 with the
secret as key over ``<timestamp>.`` followed by the exact body bytes, where
``<timestamp>`` is the Unix time sent in the timestamp header. A receiver
recomputes it with :func:`verify_signature` and refuses old timestamps, so a
captured request cannot be replayed later.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import datetime, timezone
from typing import Any, Mapping, Sequence

import jinja2

from exportkit.records import Indicator, format_time
from exportkit.results import Withdrawal

__all__ = ["records_body", "withdrawals_body", "sign", "verify_signature", "sample_variables", "delivery_id", "delivered_remote"]


def template_variables(records: Sequence[Indicator], *, instance: str, run_id: str, sink: str, now: datetime) -> dict[str, Any]:
    """What a body template can use.

    ``records`` (list of dicts, the JSON form), ``indicators`` (the record
    objects), ``instance``, ``run_id``, ``sink`` and ``sent_at`` (ISO 8601 UTC).
    """
    return {
        "records": [r.to_dict() for r in records],
        "indicators": list(records),
        "instance": instance,
        "run_id": run_id,
        "sink": sink,
        "sent_at": format_time(now),
    }


def records_body(
    records: Sequence[Indicator],
    *,
    instance: str,
    run_id: str,
    sink: str,
    now: datetime,
    template: jinja2.Template | None = None,
) -> bytes:
    """The body for one POST of records: the template's output, or the default JSON.

    :raises jinja2.TemplateError: the template failed for this batch.
    """
    if template is not None:
        return template.render(**template_variables(records, instance=instance, run_id=run_id, sink=sink, now=now)).encode("utf-8")
    body = {"instance": instance, "run_id": run_id, "sink": sink, "records": [r.to_dict() for r in records]}
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def withdrawals_body(
    withdrawals: Sequence[Withdrawal],
    *,
    instance: str,
    run_id: str,
    sink: str,
    delivered: Mapping[str, Mapping[str, Any]] | None = None,
) -> bytes:
    """The body for one POST of withdrawals.

    :param delivered: source id -> the ``remote`` kept when the record was
        accepted (:func:`delivered_remote`). A record gone from the collection
        comes as a withdrawal without a record, so ``type`` and ``value`` are
        taken from there (what the receiver got), else from the withdrawal's record.
    """
    delivered = delivered or {}
    items = []
    for w in withdrawals:
        item: dict[str, Any] = {"source_id": w.source_id, "reason": w.reason}
        kept = delivered.get(w.source_id) or {}
        for key in ("type", "value"):
            value = kept.get(key, getattr(w.record, key, None) if w.record is not None else None)
            if value is not None:
                item[key] = value
        items.append(item)
    body = {"instance": instance, "run_id": run_id, "sink": sink, "withdrawn": items}
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The signature header value: ``sha256=`` + hex HMAC-SHA256 of ``b"<timestamp>." + body``."""
    mac = hmac.new(secret.encode("utf-8"), f"{timestamp}.".encode("ascii") + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify_signature(secret: str, timestamp: str, body: bytes, signature: str, *, now: float, tolerance: float = 300.0) -> bool:
    """For receivers: True when ``signature`` matches and ``timestamp`` is within ``tolerance`` seconds of ``now``."""
    try:
        ts = int(timestamp)
    except ValueError:
        return False
    if abs(now - ts) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, ts, body), signature)


def delivered_remote(record: Indicator, body: bytes) -> dict[str, str]:
    """The ``remote`` kept for an accepted record: the delivery id, and what a later
    withdrawal must name (type and value), since it may come without the record."""
    return {"delivery": delivery_id(body), "type": record.type, "value": record.value}


def delivery_id(body: bytes) -> str:
    """A stable id of one body (sent as ``X-Exportkit-Delivery``), so a receiver can drop repeats."""
    return hashlib.sha256(body).hexdigest()[:32]


def sample_variables() -> dict[str, Any]:
    """Template variables for a one-record sample batch (settings validation)."""
    record = Indicator.create(
        source="ThreatQ", source_id="1", value="192.0.2.1", type="ip", type_name="IP Address", status="Active",
        score=7, tlp="amber", tags=["sample"], sources=["Sample Feed"], updated_at="2024-01-01T00:00:00Z",
        link="https://tq.example.com/indicators/1/details",
    )
    return template_variables([record], instance="sample", run_id="sample-run", sink="webhook",
                              now=datetime(2024, 1, 1, tzinfo=timezone.utc))
