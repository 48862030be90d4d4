"""The git environment of a sandboxed command: capataz's entries are never replaced."""

from __future__ import annotations

from capataz.sandbox.gitenv import git_env, merge_env


def test_agent_entries_come_after_ours_renumbered() -> None:
    theirs = {
        "GIT_CONFIG_COUNT": "2",
        "GIT_CONFIG_KEY_0": "core.editor",
        "GIT_CONFIG_VALUE_0": "true",
        "GIT_CONFIG_KEY_1": "user.name",
        "GIT_CONFIG_VALUE_1": "bot",
        "OTHER": "kept",
    }
    merged = merge_env(git_env(True), theirs)
    assert merged["GIT_CONFIG_COUNT"] == "3"
    pairs = [(merged[f"GIT_CONFIG_KEY_{i}"], merged[f"GIT_CONFIG_VALUE_{i}"]) for i in range(3)]
    assert pairs == [("safe.directory", "*"), ("core.editor", "true"), ("user.name", "bot")]
    assert merged["OTHER"] == "kept" and merged["GIT_OPTIONAL_LOCKS"] == "0"


def test_a_bogus_agent_count_adds_nothing_and_drops_nothing_of_ours() -> None:
    merged = merge_env(git_env(True), {"GIT_CONFIG_COUNT": "many", "GIT_CONFIG_KEY_0": "x"})
    assert merged["GIT_CONFIG_COUNT"] == "1" and merged["GIT_CONFIG_KEY_0"] == "safe.directory"


def test_without_a_git_dir_the_agent_entries_pass_as_they_are() -> None:
    theirs = {"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "a.b", "GIT_CONFIG_VALUE_0": "c"}
    assert merge_env(git_env(False), theirs) == theirs
