"""Nothing an agent lands is ever executed by capataz on the host.

The agent plants the files Python would import if capataz were started with the
repository on ``sys.path`` (``python -m capataz`` from the repository does exactly that),
lands them, and then the user starts a runner daemon in that repository."""

from __future__ import annotations

import json

from tests.helpers import wait_for
from tests.redteam.conftest import Attacker

# Each planted module writes a marker into the attacker's reach on the host, if it runs.
PLANTED = {
    "capataz/__init__.py": "open({marker!r}, 'a').write('package\\n')\n",
    "capataz/__main__.py": "open({marker!r}, 'a').write('main\\n')\n",
    "capataz/cli/__init__.py": "open({marker!r}, 'a').write('cli\\n')\n",
    "sitecustomize.py": "open({marker!r}, 'a').write('sitecustomize\\n')\n",
    "usercustomize.py": "open({marker!r}, 'a').write('usercustomize\\n')\n",
}


def test_a_landed_capataz_package_never_runs_in_the_runner_daemon(attacker: Attacker) -> None:
    marker = attacker.home / "PWNED"
    script = "; ".join(
        f"mkdir -p $(dirname {path}) && printf %s {json.dumps(code.format(marker=str(marker)))} > {path}"
        for path, code in PLANTED.items()
    )
    landed = attacker.exec(script, "plant")
    assert landed["outcome"] == "landed", landed
    assert set(PLANTED) <= set(attacker.git("ls-tree", "-r", "--name-only", "main").split())
    attacker.git("reset", "--quiet", "--hard", "main")  # the user's checkout has them now

    started = attacker.capataz("runner", "start")
    assert not marker.exists(), f"planted code ran: {marker.read_text()}"
    assert started.returncode == 0, started.stderr
    try:
        added = attacker.capataz("task", "add", "echo ran > ran.txt", "--id", "after", "--json")
        assert added.returncode == 0, added.stderr

        def done() -> bool:
            shown = attacker.capataz("task", "show", "after", "--json")
            return shown.returncode == 0 and json.loads(shown.stdout)["status"] == "done"

        wait_for(done, "the runner daemon ran the task")
    finally:
        stopped = attacker.capataz("runner", "stop")
    assert stopped.returncode == 0, stopped.stderr
    assert "ran.txt" in attacker.git("ls-tree", "--name-only", "main")
    assert not marker.exists(), marker.read_text()
