"""Human-friendly sizes and durations ("2GiB", "10m") as they appear in capataz.toml."""

from __future__ import annotations

import re

__all__ = [
    "format_bytes",
    "format_seconds",
    "parse_bytes",
    "parse_bytes_or_unlimited",
    "parse_duration",
]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B?|B)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "kib": 1024,
    "ki": 1024,
    "m": 1000**2,
    "mb": 1000**2,
    "mib": 1024**2,
    "mi": 1024**2,
    "g": 1000**3,
    "gb": 1000**3,
    "gib": 1024**3,
    "gi": 1024**3,
    "t": 1000**4,
    "tb": 1000**4,
    "tib": 1024**4,
    "ti": 1024**4,
}


def parse_duration(value: str | float) -> float:
    """Seconds from ``"90s"``, ``"10m"``, ``"1.5h"``, ``"250ms"`` or a bare number."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as '30s', '10m' or '1h'")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return float(value)
    match = _DURATION.match(value)
    if not match:
        raise ValueError(f"{value!r} is not a duration; write it like '30s', '10m' or '1h'")
    return float(match.group(1)) * _DURATION_UNITS[match.group(2)]


def parse_bytes(value: str | int) -> int:
    """Bytes from ``"2GiB"``, ``"512MiB"``, ``"10MB"`` or a bare number."""
    if isinstance(value, bool):
        raise ValueError("expected a size such as '512MiB' or '2GiB'")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("a size cannot be negative")
        return value
    match = _SIZE.match(value)
    if not match:
        raise ValueError(f"{value!r} is not a size; write it like '512MiB' or '2GiB'")
    unit = (match.group(2) or "").lower()
    return int(float(match.group(1)) * _SIZE_UNITS[unit])


def parse_bytes_or_unlimited(value: str | int | None) -> int | None:
    """Like :func:`parse_bytes`, plus ``"unlimited"`` (None: no limit at all), for the
    limits an agent may legitimately need to lift (``memory``, ``disk``)."""
    if value is None or (isinstance(value, str) and value.strip().lower() == "unlimited"):
        return None
    try:
        return parse_bytes(value)
    except ValueError as exc:
        raise ValueError(f"{exc}, or 'unlimited' for no limit") from None


def format_bytes(value: int | None) -> str:
    if value is None:
        return "-"
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


def format_seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 1:
        return f"{value * 1000:.0f} ms"
    if value < 120:
        return f"{value:.1f} s"
    return f"{value / 60:.1f} min"
