"""Masking secret values: as printed, in common encodings, inside longer text, in
nested data, and through the process-wide redactor every sink uses."""

from __future__ import annotations

import base64
import binascii
import contextlib
from collections.abc import Iterator
from urllib.parse import quote, quote_plus

import pytest

from capataz import redaction
from capataz.redaction import Redactor

SECRET = "sk-live-7Hq2Lr9TzW4xN8pV3mK6bY1cF5"


@pytest.fixture(autouse=True)
def _reset() -> Iterator[None]:
    yield
    redaction.install(None)


@pytest.mark.parametrize(
    "printed",
    [
        SECRET,
        f"Authorization: Bearer {SECRET}",
        base64.b64encode(SECRET.encode()).decode(),
        base64.b64encode((SECRET + "\n").encode()).decode(),  # `echo $KEY | base64`
        base64.b64encode(f"user:{SECRET}".encode()).decode(),  # basic auth, offset 5
        base64.b64encode(f"ab{SECRET}cd".encode()).decode(),
        base64.urlsafe_b64encode(f"x{SECRET}".encode()).decode(),
        quote(SECRET, safe=""),
        quote_plus(f"key={SECRET}&x=1"),
        binascii.hexlify(SECRET.encode()).decode(),
        binascii.hexlify(SECRET.encode()).decode().upper(),
        base64.b32encode(SECRET.encode()).decode(),  # `printf %s "$KEY" | base32`
        base64.b32encode(f"id={SECRET}".encode()).decode(),  # offset 3
        base64.b32encode(f"x{SECRET}".encode()).decode().lower(),
        SECRET.encode("utf-16-le").decode(),  # as text decodes `iconv -t UTF-16LE`
        ("k=" + SECRET).encode("utf-16-be").decode(),
    ],
)
def test_every_common_form_is_masked(printed: str) -> None:
    masked = Redactor({"OPENAI_API_KEY": SECRET}).redact(printed)
    assert "***OPENAI_API_KEY***" in masked
    assert SECRET not in masked
    # What is left cannot be decoded back into the secret.
    assert SECRET not in _decodings(masked)


def _decodings(text: str) -> str:
    found = [text]
    for chunk in text.replace("***", " ").split():
        decoders = (base64.b64decode, base64.urlsafe_b64decode, binascii.unhexlify, _b32)
        for decode in decoders:
            with contextlib.suppress(ValueError, binascii.Error):
                found.append(decode(chunk + "==").decode("utf-8", "replace"))
    return "\n".join(found)


def _b32(text: str) -> bytes:
    return base64.b32decode(text.upper() + "=" * (-len(text) % 8))


def test_an_unfinished_form_at_a_line_end_is_measured() -> None:
    """What the output splitter holds a line back for: the end of a line that starts
    a secret's form without finishing it."""
    masker = Redactor({"K": SECRET})
    assert masker.open_prefix("token: " + SECRET[:10]) == 10
    assert masker.open_prefix("ab" + SECRET[:2]) == 2
    assert masker.open_prefix("token: " + SECRET) == 0  # finished: masked, not held
    assert masker.open_prefix("nothing to hold here.") == 0
    assert Redactor().open_prefix(SECRET[:10]) == 0


def test_unrelated_text_and_short_values_are_left_alone() -> None:
    masker = Redactor({"PIN": "1234", "TOKEN": SECRET})
    assert masker.redact("pin 1234 and nothing else") == "pin 1234 and nothing else"
    assert masker.names == {"TOKEN"}
    assert Redactor().redact(SECRET) == SECRET
    assert not Redactor()


def test_nested_data_is_masked_in_a_copy() -> None:
    data = {"reason": f"saw {SECRET}", "items": [SECRET, 3, None], "n": 1.5}
    masked = Redactor({"K": SECRET}).redact_data(data)
    assert masked == {"reason": "saw ***K***", "items": ["***K***", 3, None], "n": 1.5}
    assert data["reason"] == f"saw {SECRET}"
    assert Redactor({"K": SECRET}).leaks(f"x {SECRET}") == ["K"]


def test_the_process_redactor_reloads_from_its_provider() -> None:
    values = {"A": SECRET}
    redaction.install(lambda: dict(values), refresh=0.0)
    assert redaction.redact(SECRET) == "***A***"
    values["B"] = "another-secret-value-42"
    assert redaction.redact("another-secret-value-42") == "***B***"
    redaction.add({"C": "added-at-once-value"})
    assert redaction.redact_data(["added-at-once-value"]) == ["***C***"]
    redaction.install(None)
    assert redaction.redact(SECRET) == SECRET


def test_a_failing_provider_keeps_what_is_known() -> None:
    calls = {"n": 0}

    def provider() -> dict[str, str]:
        calls["n"] += 1
        if calls["n"] > 1:
            raise RuntimeError("database gone")
        return {"A": SECRET}

    redaction.install(provider, refresh=0.0)
    assert redaction.redact(SECRET) == "***A***"
    assert redaction.redact(SECRET) == "***A***"
    assert calls["n"] >= 2


def test_many_secrets_are_masked_the_same_way_by_the_scanner() -> None:
    """Past a few dozen secrets the redactor scans instead of using one big regular
    expression; what it masks must not change."""
    many = {f"KEY_{i:03}": f"value-{i:03}-{i * 7919:08x}-tail" for i in range(200)}
    many["OPENAI_API_KEY"] = SECRET
    scanner, regex = Redactor(many), Redactor({"OPENAI_API_KEY": SECRET})
    assert scanner._pattern is None and regex._pattern is not None  # the two paths
    for printed in (
        SECRET,
        f"x{SECRET}y and again {SECRET}",
        base64.b64encode(f"user:{SECRET}".encode()).decode(),
        quote_plus(f"key={SECRET}&x=1"),
        "nothing secret here at all",
    ):
        assert scanner.redact(printed) == regex.redact(printed)
    assert scanner.redact(f"value-007-{7 * 7919:08x}-tail!") == "***KEY_007***!"
    assert scanner.leaks(f"{SECRET} value-001-{7919:08x}-tail") == ["KEY_001", "OPENAI_API_KEY"]
