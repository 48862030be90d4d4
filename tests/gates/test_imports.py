"""Import extraction: which modules, on which lines, and which entries forbid them."""

from __future__ import annotations

import textwrap

import pytest

from capataz.gates.imports import (
    ImportRef,
    Language,
    find_imports,
    forbidden_entry,
    language_of,
    scan_javascript,
    scan_python,
)


def _found(refs: list[ImportRef]) -> list[tuple[str, int]]:
    return [(ref.module, ref.line) for ref in refs]


def _src(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import os\n", [("os", 1)]),
        ("import legacy.db as d, json\n", [("json", 1), ("legacy.db", 1)]),
        ("x = 1\nfrom legacy.db import Session\n", [("legacy.db", 2)]),
        ("from legacy import (\n    a,\n    b,\n)\n", [("legacy", 1)]),
        ("def f():\n    import legacy\n", [("legacy", 2)]),
        ("m = __import__('legacy')\n", [("legacy", 1)]),
        (
            "import importlib\nm = importlib.import_module('legacy.db')\n",
            [
                ("importlib", 1),
                ("legacy.db", 2),
            ],
        ),
        # strings and comments that look like imports are not imports
        ('s = "import legacy"\n# import legacy\n', []),
        ("from . import sibling\n", [(".", 1)]),
        ("from ..legacy import x\n", [("..legacy", 1)]),
    ],
)
def test_python_imports(source: str, expected: list[tuple[str, int]]) -> None:
    assert _found(scan_python(source)) == expected


def test_python_multiline_from_spans_its_lines() -> None:
    (ref,) = scan_python("from legacy import (\n    a,\n    b,\n)\n")
    assert (ref.line, ref.end_line, ref.names) == (1, 4, ("a", "b"))
    assert ref.spans([3]) and not ref.spans([5])


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("def broken(:\n    pass\nimport legacy\n", [("legacy", 3)]),
        ("print 'py2'\nfrom legacy.db import x, y as z\n", [("legacy.db", 2)]),
        ("x = (\nimport os, legacy ; import json\n", [("json", 2), ("legacy", 2), ("os", 2)]),
        ("def f(:\n    m = __import__('legacy')\n", [("legacy", 2)]),
        ("import legacy\x00\n", [("legacy", 1)]),  # NUL bytes make ast raise ValueError
    ],
)
def test_broken_python_still_has_its_imports_found(
    source: str, expected: list[tuple[str, int]]
) -> None:
    assert _found(scan_python(source)) == expected


def test_broken_python_multiline_from_spans_to_its_paren() -> None:
    source = "def broken(:\nfrom legacy import (  # why\n    a,\n    b,\n)\n"
    (ref,) = scan_python(source)
    assert (ref.module, ref.line, ref.end_line, ref.names) == ("legacy", 2, 5, ("a", "b"))


JS_SAMPLE = _src(
    """
    import React from 'react'
    import {
      a,
      b as c,
    } from "lodash/fp";
    import './styles.css'
    import type { T } from '@scope/pkg/types'
    import * as ns from "ns-mod"
    import def, { named } from 'mixed'
    export * from './reexport'
    export { x } from 'exported'
    export type { Y } from 'exported-types'
    export { local }
    const m = require('required')
    const lazy = await import("dynamic")
    import legacy = require('ts-require')
    import{min}from'minified'
    """
)


def test_javascript_imports_and_lines() -> None:
    assert _found(scan_javascript(JS_SAMPLE)) == [
        ("react", 1),
        ("lodash/fp", 2),  # multi-line: the line of the `import` keyword
        ("./styles.css", 6),
        ("@scope/pkg/types", 7),
        ("ns-mod", 8),
        ("mixed", 9),
        ("./reexport", 10),
        ("exported", 11),
        ("exported-types", 12),
        ("required", 14),
        ("dynamic", 15),
        ("ts-require", 16),
        ("minified", 17),
    ]


def test_javascript_multiline_import_spans_to_from() -> None:
    ref = next(r for r in scan_javascript(JS_SAMPLE) if r.module == "lodash/fp")
    assert (ref.line, ref.end_line) == (2, 5)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("// import a from 'commented'\nimport b from 'real'\n", [("real", 2)]),
        ("/* import a from 'x'\n   require('y') */ import c from 'z'\n", [("z", 2)]),
        ("const u = 'http://host/*'; const v = require('after-url')\n", [("after-url", 1)]),
        ("const r = /\\/*/; import k from 'after-regex'\n", [("after-regex", 1)]),
        ("const s = `${a}//`; require('after-template')\n", [("after-template", 1)]),
        ("obj.import('no'); myrequire('no'); importx('no')\n", []),
        ("import(`./locale/${lang}.js`)\n", []),
        ("export { a, b }\nimport c from 'next-statement'\n", [("next-statement", 2)]),
    ],
)
def test_javascript_comments_and_lookalikes(source: str, expected: list[tuple[str, int]]) -> None:
    assert _found(scan_javascript(source)) == expected


@pytest.mark.parametrize(
    ("path", "language"),
    [
        ("a.py", Language.PYTHON),
        ("stubs/a.pyi", Language.PYTHON),
        *((f"src/a{ext}", Language.JAVASCRIPT) for ext in (".js", ".mjs", ".cjs", ".jsx")),
        *((f"src/a{ext}", Language.JAVASCRIPT) for ext in (".ts", ".tsx", ".mts", ".cts")),
        ("README.md", None),
        ("Makefile", None),
    ],
)
def test_language_of(path: str, language: Language | None) -> None:
    assert language_of(path) is language


def test_find_imports_ignores_other_files() -> None:
    assert find_imports("notes.md", "import legacy\n") == []
    assert _found(find_imports("a.ts", "import x from 'legacy'\n")) == [("legacy", 1)]


@pytest.mark.parametrize(
    ("module", "language", "entries", "expected"),
    [
        ("legacy", Language.PYTHON, ["legacy"], "legacy"),
        ("legacy.db.models", Language.PYTHON, ["legacy"], "legacy"),
        ("legacy_tools", Language.PYTHON, ["legacy"], None),
        ("legacyx.db", Language.PYTHON, ["legacy"], None),
        ("legacy.db", Language.PYTHON, ["other", "legacy.db"], "legacy.db"),
        ("legacy", Language.JAVASCRIPT, ["legacy"], "legacy"),
        ("legacy/sub/path", Language.JAVASCRIPT, ["legacy"], "legacy"),
        ("legacy-utils", Language.JAVASCRIPT, ["legacy"], None),
        ("@corp/old", Language.JAVASCRIPT, ["@corp/old"], "@corp/old"),
        ("@corp/old/deep", Language.JAVASCRIPT, ["@corp/old"], "@corp/old"),
        ("@corp/older", Language.JAVASCRIPT, ["@corp/old"], None),
        ("@corp/anything", Language.JAVASCRIPT, ["@corp"], "@corp"),
        ("node:child_process", Language.JAVASCRIPT, ["child_process"], "child_process"),
        ("./legacy", Language.JAVASCRIPT, ["legacy"], None),
    ],
)
def test_forbidden_entry(
    module: str, language: Language, entries: list[str], expected: str | None
) -> None:
    assert forbidden_entry(ImportRef(module, 1, 1), entries, language) == expected


def test_forbidden_entry_python_from_import_of_a_submodule() -> None:
    (ref,) = scan_python("from legacy import db\n")
    assert forbidden_entry(ref, ["legacy.db"], Language.PYTHON) == "legacy.db"
    assert forbidden_entry(ref, ["legacy.web"], Language.PYTHON) is None


def test_relative_python_imports_are_never_forbidden() -> None:
    (ref,) = scan_python("from .legacy import x\n")
    assert ref.relative
    assert forbidden_entry(ref, ["legacy", ".legacy"], Language.PYTHON) is None
