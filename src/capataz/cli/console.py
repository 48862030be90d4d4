"""Shared Rich consoles: people read stdout; errors and warnings go to stderr."""

from rich.console import Console

__all__ = ["err", "out"]

out = Console()
err = Console(stderr=True)
