"""Human-friendly sizes and durations ("2GiB", "10m") as they appear in capataz.toml,
and the one spelling of an agent's budget ("200k" tokens, "2.5usd")."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "Budget",
    "format_budget_tokens",
    "format_bytes",
    "format_seconds",
    "parse_budget",
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


# -- budgets ------------------------------------------------------------------------

_TOKENS = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kKmM])?\s*(?:tokens?)?\s*$")
_TOKEN_UNITS = {None: 1, "k": 1000, "m": 1000**2}
_DOLLARS = re.compile(r"^\s*(?:\$\s*(\d+(?:\.\d+)?)|(\d+(?:\.\d+)?)\s*(?:\$|usd))\s*$", re.I)
BUDGET_SYNTAX = (
    "write it like '200k' (tokens, k/M suffix), '2.5usd' or '$2.5' (dollars), "
    "or both: '200k,2.5usd'"
)


@dataclass(frozen=True)
class Budget:
    """What one run of an agent may consume before capataz stops it: tokens (in plus
    out, as the agent reports them) and/or dollars. None is no limit on that figure.
    One type from capataz.toml to the queue to the run, so every door (``--budget``,
    plan.yaml, the API, ``[agents.X] budget``) means the same thing."""

    tokens: int | None = None
    usd: float | None = None

    def over(self, default: Budget | None) -> Budget:
        """This budget over an agent's default: each figure this one names wins, the
        default's others stay (a task that raises its token budget keeps the dollar
        cap the operator set)."""
        if default is None:
            return self
        return Budget(
            tokens=self.tokens if self.tokens is not None else default.tokens,
            usd=self.usd if self.usd is not None else default.usd,
        )

    def as_json(self) -> dict[str, Any]:
        return {"tokens": self.tokens, "usd": self.usd}

    @classmethod
    def from_json(cls, value: Any) -> Budget | None:
        """What :meth:`as_json` wrote (a stored column, a wire field); None stays None."""
        if value is None:
            return None
        return parse_budget(value)

    def describe(self) -> str:
        """``200,000 tokens, $2.50`` for a person."""
        parts = []
        if self.tokens is not None:
            parts.append(f"{self.tokens:,} tokens")
        if self.usd is not None:
            parts.append(f"${self.usd:.2f}")
        return ", ".join(parts) or "no limit"


def format_budget_tokens(value: int) -> str:
    """A token count as a person writes it back in ``--budget`` (200000 -> 200k)."""
    for unit, size in (("M", 1000**2), ("k", 1000)):
        if value >= size and value % size == 0:
            return f"{value // size}{unit}"
    return str(value)


def _tokens(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a token count; {BUDGET_SYNTAX}")
    if isinstance(value, int):
        count = value
    elif isinstance(value, float) and value.is_integer():
        count = int(value)
    elif isinstance(value, str) and (match := _TOKENS.match(value)):
        number, unit = float(match.group(1)), (match.group(2) or "").lower() or None
        if unit is None and not number.is_integer():
            raise ValueError(f"{value!r}: tokens are whole; for dollars write '{value}usd'")
        count = round(number * _TOKEN_UNITS[unit])
    else:
        raise ValueError(f"{value!r} is not a token count; {BUDGET_SYNTAX}")
    if count <= 0:
        raise ValueError(f"a token budget must be above 0, not {value!r}")
    return count


def _dollars(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not an amount of dollars; {BUDGET_SYNTAX}")
    if isinstance(value, int | float):
        amount = float(value)
    elif isinstance(value, str) and (match := _DOLLARS.match(value)):
        amount = float(match.group(1) or match.group(2))
    else:
        raise ValueError(f"{value!r} is not an amount of dollars; {BUDGET_SYNTAX}")
    if not math.isfinite(amount) or amount <= 0:
        raise ValueError(f"a dollar budget must be above 0, not {value!r}")
    return amount


def parse_budget(value: Any) -> Budget:
    """A :class:`Budget` from what a person writes: ``"200k"`` / ``200000`` (tokens,
    optional k or M), ``"2.5usd"`` / ``"$2.5"`` (dollars: a number with ``usd`` or
    ``$``), both comma-separated (``"200k,2.5usd"``), or a table ``{tokens = 200000,
    usd = 2.5}``. A Budget is returned as it is. ValueError saying how to write it."""
    if isinstance(value, Budget):
        return value
    if isinstance(value, Mapping):
        unknown = sorted(set(value) - {"tokens", "usd"})
        if unknown:
            raise ValueError(f"a budget has the keys tokens and usd, not {', '.join(unknown)}")
        tokens, usd = value.get("tokens"), value.get("usd")
        budget = Budget(
            tokens=None if tokens is None else _tokens(tokens),
            usd=None if usd is None else _dollars(usd),
        )
    elif isinstance(value, str):
        tokens_found: int | None = None
        usd_found: float | None = None
        for part in value.split(","):
            if _DOLLARS.match(part):
                if usd_found is not None:
                    raise ValueError(f"{value!r} names two dollar budgets; {BUDGET_SYNTAX}")
                usd_found = _dollars(part)
            else:
                if tokens_found is not None:
                    raise ValueError(f"{value!r} names two token budgets; {BUDGET_SYNTAX}")
                tokens_found = _tokens(part)
        budget = Budget(tokens=tokens_found, usd=usd_found)
    else:
        budget = Budget(tokens=_tokens(value))
    if budget.tokens is None and budget.usd is None:
        raise ValueError(f"an empty budget; {BUDGET_SYNTAX}")
    return budget
