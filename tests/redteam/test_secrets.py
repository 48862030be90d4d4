"""Red team: an agent holding a vault secret tries to land it or print it past the
masks. Every byte that would land is searched (binary files, file names, symlink
targets, the commit message, base32, UTF-16, hex, base64 at any offset), and a value
printed across writes or line breaks is masked: afterwards it is nowhere in .capataz/
(database, WAL, progress files, run.log) nor in anything capataz printed."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from cryptography.fernet import Fernet

SECRET = "sk-proj-Zq81vN4rTt2LmX7cB0pW5yKd"
AGENT = """
[agents.leaky]
command = ["bash", "-c", "{instruction}"]
timeout = "60s"
secrets = ["LEAK_KEY"]
"""
ATTACK = r"""
printf 'bin\000\001%s\000' "$LEAK_KEY" > blob.bin
touch "name-$LEAK_KEY.txt"
ln -s "/tmp/$LEAK_KEY" link
printf '%s' "$LEAK_KEY" | base32 > b32.txt
printf '%s' "$LEAK_KEY" | iconv -f UTF-8 -t UTF-16LE > le.txt
printf '%s' "$LEAK_KEY" | iconv -f UTF-8 -t UTF-16BE > be.txt
printf '%s' "$LEAK_KEY" | od -An -tx1 | tr -d ' \n' | tr a-f A-F > hex.txt
printf 'x%s' "$LEAK_KEY" | base64 -w0 > b64-1.txt
printf 'xy%s' "$LEAK_KEY" | base64 -w0 > b64-2.txt
printf '%s\n%s\n' "${LEAK_KEY:0:12}" "${LEAK_KEY:12}"
printf '%s\r\n' "${LEAK_KEY:0:5}"; printf '%s\r\n' "${LEAK_KEY:5}"
printf 'half %s' "${LEAK_KEY:0:9}"; sleep 0.2; printf '%s done\n' "${LEAK_KEY:9}"
printf '%s%s%s' "$LEAK_KEY" "$LEAK_KEY" "$LEAK_KEY" | base64 -w 76
printf '%s' "$LEAK_KEY" | iconv -f UTF-8 -t UTF-16LE; echo
"""
LEAKING_FILES = {"blob.bin", "name-***LEAK_KEY***.txt", "link", "b32.txt", "le.txt", "be.txt"}
LEAKING_FILES |= {"hex.txt", "b64-1.txt", "b64-2.txt"}


def _forms() -> list[bytes]:
    raw = SECRET.encode()
    return [
        raw,
        raw[4:],  # most of it, wherever a mask missed a line break
        base64.b64encode(raw),
        base64.b32encode(raw).rstrip(b"="),
        binascii.hexlify(raw),
        SECRET.encode("utf-16-le"),
        SECRET.encode("utf-16-be"),
    ]


def _leaks(blob: bytes) -> list[bytes]:
    return [form for form in _forms() if form in blob]


def test_every_way_of_landing_or_printing_a_secret_is_blocked_and_masked(attacker: Any) -> None:
    (attacker.repo / "capataz.toml").write_text(
        (attacker.repo / "capataz.toml").read_text() + AGENT
    )
    env = {"CAPATAZ_MASTER_KEY": Fernet.generate_key().decode()}
    stored = attacker.capataz("secret", "set", "LEAK_KEY", env=env, stdin=SECRET + "\n")
    assert stored.returncode == 0, stored.stderr
    before = attacker.git("rev-parse", "main")

    done = attacker.capataz(
        "exec",
        ATTACK,
        "--id",
        "leak",
        "--agent",
        "leaky",
        "--json",
        "--title",
        f"ship {SECRET}",
        env=env,
    )
    assert _leaks((done.stdout + done.stderr).encode()) == [], done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["outcome"] == "blocked", report
    leaks = [v for v in report["violations"] if v["type"] == "SECRET_LEAK"]
    assert all(v["severity"] == "critical" for v in leaks)
    assert {v["file"] for v in leaks if v["file"]} == LEAKING_FILES
    assert any("commit message" in v["details"] for v in leaks)
    assert attacker.git("rev-parse", "main") == before  # nothing landed

    kept = [p for p in (attacker.repo / ".capataz").rglob("*") if p.is_file()]
    found = {str(p): _leaks(p.read_bytes()) for p in kept if not p.name.endswith(".key")}
    assert {path: hits for path, hits in found.items() if hits} == {}
    log = next(p for p in kept if p.name == "run.log").read_text()
    assert log.count("***LEAK_KEY***") >= 5

    # Human mode prints the same run: the summary names masked files, no value.
    again = attacker.capataz("exec", ATTACK, "--id", "leak2", "--agent", "leaky", env=env)
    assert again.returncode == 1
    assert _leaks((again.stdout + again.stderr).encode()) == []
    assert "***LEAK_KEY***" in again.stdout
