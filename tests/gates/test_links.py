"""Policy rules for what a checkout would follow later: symlinks pointing out of the
workspace and a .gitmodules an agent adds or changes."""

from __future__ import annotations

from pathlib import Path

import pytest

from capataz.config import PolicyConfig, parse_config
from capataz.gates.policy import check_policy
from capataz.models import ChangeKind, FileChange, Severity, ViolationType
from capataz.workspace.changes import ChangeSet, FileDiff


def _diff(path: str, kind: ChangeKind = ChangeKind.ADDED) -> FileDiff:
    return FileDiff(change=FileChange(path=path, kind=kind))


def _link(root: Path, path: str, target: str) -> FileDiff:
    link = root / path
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(target)
    return _diff(path)


def _found(root: Path, *files: FileDiff, policy: PolicyConfig | None = None) -> list[tuple]:
    changes = ChangeSet(root=root, files=files)
    return [
        (v.type, v.severity, v.file)
        for v in check_policy(changes, policy or PolicyConfig(check_encoding=False))
    ]


@pytest.mark.parametrize(
    ("path", "target"),
    [
        ("etc", "/etc/passwd"),
        ("up", "../outside"),
        ("a/b/deep", "../../../../home"),
        ("a/sneaky", "./x/../../../etc"),
        ("hooks", ".git/hooks"),
        ("a/config", "../.git/config"),
    ],
)
def test_a_symlink_out_of_the_workspace_is_a_high_violation(
    tmp_path: Path, path: str, target: str
) -> None:
    assert _found(tmp_path, _link(tmp_path, path, target)) == [
        (ViolationType.SYMLINK_ESCAPE, Severity.HIGH, path)
    ]


def test_a_chain_of_links_that_ends_outside_is_caught(tmp_path: Path) -> None:
    (tmp_path / "dir").symlink_to("/")  # already in the repository: not the agent's
    assert _found(tmp_path, _link(tmp_path, "innocent", "dir/etc")) == [
        (ViolationType.SYMLINK_ESCAPE, Severity.HIGH, "innocent")
    ]


@pytest.mark.parametrize("target", ["docs/readme.md", "../sibling.txt", "a/../b", "."])
def test_links_inside_the_workspace_are_fine(tmp_path: Path, target: str) -> None:
    assert _found(tmp_path, _link(tmp_path, "sub/link", target)) == []


def test_a_new_or_changed_gitmodules_is_a_violation_but_a_removed_one_is_not(
    tmp_path: Path,
) -> None:
    (tmp_path / ".gitmodules").write_text('[submodule "x"]\n\turl = https://evil.invalid/x\n')
    for kind in (ChangeKind.ADDED, ChangeKind.MODIFIED):
        assert _found(tmp_path, _diff(".gitmodules", kind)) == [
            (ViolationType.SUBMODULE_CONFIG, Severity.HIGH, ".gitmodules")
        ]
    assert _found(tmp_path, _diff(".gitmodules", ChangeKind.DELETED)) == []
    assert _found(tmp_path, _diff("vendor/.gitmodules")) == []  # git reads the root one only


def test_both_severities_are_configurable(tmp_path: Path) -> None:
    policy = parse_config(
        "[policy]\ncheck_encoding = false\n"
        'severity = { SYMLINK_ESCAPE = "critical", SUBMODULE_CONFIG = "low" }\n'
    ).policy
    (tmp_path / ".gitmodules").write_text("")
    found = _found(tmp_path, _link(tmp_path, "l", "/"), _diff(".gitmodules"), policy=policy)
    assert sorted(found) == sorted(
        [
            (ViolationType.SYMLINK_ESCAPE, Severity.CRITICAL, "l"),
            (ViolationType.SUBMODULE_CONFIG, Severity.LOW, ".gitmodules"),
        ]
    )
