"""Setting capataz up: `init`, `doctor` (and its escape probes), `demo`."""
