"""Red team: an agent tries to steer the terminal of whoever runs capataz — OSC 52
(write the clipboard), ESC[2J (clear the screen), a forged "✓ landed on main" line and
a file whose name holds escape sequences. capataz must print none of it raw: not in
human mode, not under a real pty, not in --json, and not in run.log."""

from __future__ import annotations

import json
import re
import shlex
import shutil
from typing import Any

import pytest

ATTACK = r"""
printf '\033]52;c;cm0gLXJmIH4K\007'
printf '\033[2J\033[H\r\033[32m\342\234\223 landed on main\033[0m\n'
printf '\302\233' ; printf '31m C1 CSI\n'
printf 'bell\007 del\177 back\010\n'
echo hi > "$(printf 'evil\033[2Jname\302\2337m')-$(date +%s%N).txt"
"""
RAW_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _raw_controls(text: str) -> list[str]:
    return sorted(set(RAW_CONTROL.findall(text)))


def test_agent_output_and_file_names_cannot_steer_the_terminal(attacker: Any) -> None:
    human = attacker.capataz("exec", ATTACK, "--id", "tty1")
    assert human.returncode == 0, human.stderr  # the file itself is allowed to land
    assert _raw_controls(human.stdout + human.stderr) == []
    assert "\\x1b]52;c;" in human.stdout  # shown, escaped, not obeyed
    assert "landed on main" in human.stdout

    done = attacker.capataz("exec", ATTACK, "--id", "tty2", "--json")
    assert _raw_controls(done.stdout + done.stderr) == []
    report = json.loads(done.stdout)  # still JSON, and the name is still the real name
    assert any("\x1b[2J" in change["path"] for change in report["file_changes"])

    log = next((attacker.repo / ".capataz").rglob("run.log")).read_text()
    assert _raw_controls(log.replace("\n", "")) == []
    assert "\\x1b[2J" in log


@pytest.mark.skipif(shutil.which("script") is None, reason="needs script(1) for a pty")
def test_under_a_real_terminal_nothing_raw_reaches_it(attacker: Any) -> None:
    """With a pty capataz draws its live view (its own cursor moves and colours are
    fine); what the agent printed must arrive escaped."""
    command = shlex.join([str(attacker.command), "exec", ATTACK, "--id", "pty"])
    done = attacker.run(
        ["script", "-qec", command, "/dev/null"], check=False, env={"TERM": "xterm"}
    )
    text = done.stdout
    assert "\x1b]52" not in text  # the clipboard write
    assert "\x1b[2J" not in text  # capataz never clears the screen; the agent may not
    assert "\x9b" not in text and "\x07" not in text
    assert "\\x1b]52;c;" in text
