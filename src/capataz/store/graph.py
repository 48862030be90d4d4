"""Dependency-graph checks that need no database: finding a cycle among tasks added
together (a task added alone cannot close one, since nothing existing can depend on
an id that does not exist yet)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

__all__ = ["find_cycle"]


def find_cycle(edges: Mapping[str, Sequence[str]]) -> list[str] | None:
    """A cycle in ``edges`` (task -> the tasks it depends on) as ``[a, b, ..., a]``, or
    None. Iterative, so a chain of thousands of tasks cannot hit the recursion limit."""
    white, grey, black = 0, 1, 2
    colour = dict.fromkeys(edges, white)
    for start in sorted(edges):
        if colour[start] != white:
            continue
        path: list[str] = [start]
        stack = [iter(sorted(edges[start]))]
        colour[start] = grey
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                colour[path.pop()] = black
                stack.pop()
                continue
            state = colour.get(nxt, black)  # ids outside the batch cannot lead back
            if state == grey:
                return [*path[path.index(nxt) :], nxt]
            if state == white:
                colour[nxt] = grey
                path.append(nxt)
                stack.append(iter(sorted(edges[nxt])))
    return None
