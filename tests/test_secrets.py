"""Secrets: never printed, redacted from logs and tracebacks."""

from __future__ import annotations

import io
import logging

import pytest

from exportkit.secrets import MASK, RedactingFilter, Secret, SecretReferenceError, is_reference, redact, register, resolve


def test_repr_and_str_never_show_the_value():
    secret = Secret("correct-horse-battery", source="env:PW")
    assert "correct-horse" not in repr(secret) and "correct-horse" not in str(secret)
    assert str(secret) == MASK and "env:PW" in repr(secret)
    assert "correct-horse" not in f"{secret} {secret!r} {[secret]} {({'k': secret})}"
    assert secret.reveal() == "correct-horse-battery"


def test_equality_and_truthiness_without_revealing():
    assert Secret("abcd1") == Secret("abcd1") and Secret("abcd1") != Secret("abcd2")
    assert hash(Secret("abcd1")) == hash(Secret("abcd1"))
    assert not Secret("") and Secret("x")


def test_resolve_literal_env_and_file(tmp_path):
    assert resolve("plain-literal-1").source == "literal"
    assert resolve("env:X_PW", environ={"X_PW": "from-env-1"}).reveal() == "from-env-1"
    (tmp_path / "s").write_text("from-file-1\n")
    secret = resolve(f"file:{tmp_path / 's'}")
    assert secret.reveal() == "from-file-1" and secret.source.startswith("file:")


def test_resolve_errors_name_the_reference_not_a_value(tmp_path):
    with pytest.raises(SecretReferenceError, match="MISSING_VAR"):
        resolve("env:MISSING_VAR", environ={})
    with pytest.raises(SecretReferenceError, match="variable name"):
        resolve("env:", environ={})
    with pytest.raises(SecretReferenceError, match="nope.txt"):
        resolve("file:nope.txt", base_dir=tmp_path)


def test_is_reference():
    assert is_reference("env:A") and is_reference("file:/x") and not is_reference("literal")


def test_redact_replaces_every_known_value():
    Secret("tok-ABCDEFGH-1")
    register("pw-9876543")
    text = "token=tok-ABCDEFGH-1 password=pw-9876543 again tok-ABCDEFGH-1"
    assert redact(text) == f"token={MASK} password={MASK} again {MASK}"


def test_short_values_are_not_registered():
    register("ab")
    assert redact("a tab b") == "a tab b"


def test_longer_secret_wins_over_its_prefix():
    register("prefix-secret")
    register("prefix-secret-longer")
    assert redact("x prefix-secret-longer y") == f"x {MASK} y"


@pytest.fixture()
def captured():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactingFilter())
    logger = logging.getLogger("exportkit.test.secrets")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    yield logger, stream
    logger.removeHandler(handler)


def test_filter_removes_a_secret_from_a_log_message(captured):
    logger, stream = captured
    secret = Secret("swordfish-4242")
    logger.info("login with %s failed for %s", secret.reveal(), "analyst")
    out = stream.getvalue()
    assert "swordfish-4242" not in out and MASK in out and "analyst" in out


def test_filter_removes_a_secret_from_a_traceback(captured):
    logger, stream = captured
    secret = Secret("trace-secret-777")
    try:
        raise RuntimeError(f"server said: bad password {secret.reveal()}")
    except RuntimeError:
        logger.exception("request failed")
    out = stream.getvalue()
    assert "Traceback" in out and "RuntimeError" in out
    assert "trace-secret-777" not in out


def test_filter_keeps_messages_without_secrets(captured):
    logger, stream = captured
    logger.warning("%d records in %s", 3, "batch")
    assert stream.getvalue().strip() == "3 records in batch"
