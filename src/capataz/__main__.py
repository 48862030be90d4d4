"""`python -m capataz` runs the CLI (what tests and scripts use, independent of PATH)."""

from capataz.cli import main

main()
