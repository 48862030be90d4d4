"""`python -m capataz` runs the CLI (what tests and scripts use, independent of PATH)."""

import sys
from pathlib import Path

# `python -m` puts the current directory (often a repository agents write to) first on
# sys.path; nothing capataz imports from here on may come from there.
sys.path[:] = [p for p in sys.path if p not in ("", str(Path.cwd()))]

from capataz.cli import main  # noqa: E402

main()
