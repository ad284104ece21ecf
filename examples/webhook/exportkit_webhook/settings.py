"""Settings of the webhook sink (the ``[sinks.webhook]`` table).

Every key is declared with :func:`exportkit.setting`, so ``exportkit check``
lists every mistake at once and the configuration reference in the docs is
generated from this class.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Iterator

import attrs
import jinja2

from exportkit.secrets import Secret
from exportkit.settings import ConfigPath, http_url, setting
from exportkit.templates import sandboxed_environment

__all__ = ["WebhookSettings", "parse_header", "template_environment", "load_template"]

# RFC 9110 token characters: what a header name may hold.
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


def template_environment() -> jinja2.Environment:
    """The jinja2 environment for body templates.

    exportkit's sandboxed environment (a template from a config file cannot
    reach Python internals or the environment), plus a ``json`` filter.
    StrictUndefined: a misspelt variable fails loudly instead of sending an
    empty field. No autoescape: the body is JSON (or any text), not HTML.
    """
    env = sandboxed_environment(keep_trailing_newline=True)
    env.filters["json"] = _json_filter
    return env


def _json_filter(value: object) -> str:
    import json

    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def load_template(path: str) -> jinja2.Template:
    """Read and compile a body template file.

    :raises OSError: the file cannot be read. :raises jinja2.TemplateSyntaxError: it does not compile.
    """
    text = Path(path).expanduser().read_text(encoding="utf-8")
    return template_environment().from_string(text)


def parse_header(line: str) -> tuple[str, str]:
    """Split ``"Name: value"`` into ``(name, value)``.

    :raises ValueError: no colon, an invalid name, or a line break in the value.
    """
    name, sep, value = line.partition(":")
    name, value = name.strip(), value.strip()
    if not sep or not name:
        raise ValueError(f"{line!r} is not 'Name: value'")
    if not _HEADER_NAME.fullmatch(name):
        raise ValueError(f"{name!r} is not a valid header name")
    if "\r" in value or "\n" in value:
        raise ValueError(f"the value of header {name} holds a line break")
    return name, value



def _check_header_name(value: str) -> str | None:
    return None if _HEADER_NAME.fullmatch(value) else "is not a valid HTTP header name"


def _check_headers(values: list[str]) -> str | None:
    for line in values:
        try:
            parse_header(line)
        except ValueError as exc:
            return str(exc)
    return None


def _check_template(path: str | None) -> str | None:
    """Fail config validation for a template that is missing, does not compile, or fails on a sample batch."""
    if path is None:
        return None
    try:
        template = load_template(path)
    except OSError as exc:
        return f"cannot read template: {exc.strerror or exc}"
    except jinja2.TemplateSyntaxError as exc:
        return f"template syntax error on line {exc.lineno}: {exc.message}"
    from exportkit_webhook.body import sample_variables

    try:
        template.render(**sample_variables())
    except jinja2.TemplateError as exc:
        return f"template fails on a sample batch: {exc}"
    return None


def _check_file(value: str | None) -> str | None:
    if value is None:
        return None
    return None if os.path.isfile(os.path.expanduser(value)) else "file not found"


_CHECK_URL = http_url("https://hooks.example.com/exportkit")


@attrs.frozen
class WebhookSettings:
    """``[sinks.webhook]``: where batches go, how they are signed and shaped."""

    url: str = setting(help="The URL every batch is POSTed to.", example="https://hooks.example.com/exportkit", check=_CHECK_URL)
    secret: Secret | None = setting(
        None,
        help="HMAC-SHA256 key for signing each body (a literal, env:NAME or file:PATH); none: bodies are not signed.",
        example="env:WEBHOOK_SECRET",
    )
    signature_header: str = setting(
        "X-Exportkit-Signature", help="Header carrying sha256=<hex HMAC of '<timestamp>.<body>'>.", check=_check_header_name
    )
    timestamp_header: str = setting(
        "X-Exportkit-Timestamp", help="Header carrying the Unix time the body was signed at (part of the signed text).",
        check=_check_header_name,
    )
    token: Secret | None = setting(
        None, help="Sent as 'Authorization: Bearer <token>' (a literal, env:NAME or file:PATH).", example="env:WEBHOOK_TOKEN"
    )
    headers: list[str] = setting([], help="Extra static headers, each as \"Name: value\".", check=_check_headers)
    template: ConfigPath | None = setting(
        None,
        help="A jinja2 template file that renders the whole body of a batch (default: the JSON body described in the README).",
        check=_check_template,
    )
    content_type: str = setting("application/json", help="Content-Type of the bodies.")
    batch_size: int = setting(100, help="Most records in one POST; a larger batch from the engine is sent in several.", minimum=1, maximum=10_000)
    send_withdrawals: bool = setting(
        False, help="POST {\"withdrawn\": [...]} when a record expires or leaves the collection (otherwise withdrawals are only forgotten)."
    )
    split_rejected: bool = setting(
        True, help="On a 400/413/422 for several records, split the batch to find the records the receiver refuses."
    )
    timeout: float = setting(30.0, help="Seconds to wait for the receiver's answer.", minimum=1, maximum=600)
    max_response_mb: int = setting(1, help="Largest answer accepted from the receiver, in MiB (it only acknowledges).", minimum=1, maximum=1024)
    attempts: int = setting(5, help="Tries per POST (the first included) before the records are deferred to the next run.", minimum=1, maximum=20)
    max_retry_after: float = setting(60.0, help="Longest Retry-After (seconds) waited for; a longer one defers the records.", minimum=0)
    verify_tls: bool = setting(True, help="Verify the receiver's TLS certificate.")
    ca_bundle: ConfigPath | None = setting(None, help="CA bundle (PEM) to verify the receiver's certificate with.", check=_check_file)

    def check(self) -> Iterator[tuple[str, str]]:
        """Rules spanning several keys, as ``(key, message)``."""
        if self.ca_bundle and not self.verify_tls:
            yield "verify_tls", "is false while ca_bundle is set; drop one of them"
        if self.signature_header.casefold() == self.timestamp_header.casefold():
            yield "timestamp_header", "must differ from signature_header"
        names = {parse_header(line)[0].casefold() for line in self.headers}
        for reserved in (self.signature_header, self.timestamp_header, "Content-Type"):
            if reserved.casefold() in names:
                yield "headers", f"must not set {reserved}; the sink sets it"
        if self.token is not None and "authorization" in names:
            yield "headers", "must not set Authorization when token is set"

    @property
    def verify(self) -> bool | str:
        """The ``verify`` argument for requests."""
        if self.ca_bundle:
            return os.path.expanduser(self.ca_bundle)
        return self.verify_tls

    def static_headers(self) -> dict[str, str]:
        """The ``headers`` setting as a dict."""
        return dict(parse_header(line) for line in self.headers)
