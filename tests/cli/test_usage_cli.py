"""`capataz run show` and `capataz metrics` tell what a run's agent used; a budget is
given to `task add` and plan.yaml and kept with the task; a bad budget anywhere (the
option, plan.yaml, capataz.toml) is exit 2 and one line naming it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from capataz.store import RunDetails, Store, database_url

from .test_task_cli import CONFIG, Cli, _env, assert_one_line_error


@pytest.fixture
def cli(make_repo: Callable[..., Path]) -> Cli:
    return Cli(make_repo(config=CONFIG), _env())


def _finished_run(cli: Cli, details: RunDetails) -> str:
    """A task added by the CLI and a run of it reported by a runner (the store's own
    calls, as a runner makes them)."""
    cli.json("task", "add", "true", "--id", "t1")
    store = Store.open(database_url(cli.repo))
    try:
        claimed = store.leases.claim("runner-1")
        assert claimed is not None
        assert store.leases.complete(claimed.id, claimed.fencing_token, "done", details=details)
        return claimed.run_id
    finally:
        store.close()


def test_run_show_prints_the_usage_and_metrics_sum_it(cli: Cli) -> None:
    details = RunDetails(
        outcome="landed",
        tokens_in=12_345,
        tokens_out=678,
        cost_usd=0.0421,
        model="claude-sonnet-4-5",
        turns=3,
    )
    run_id = _finished_run(cli, details)
    shown = cli.ok("run", "show", run_id)
    assert "shell: 12,345 tokens in, 678 out, $0.0421, model claude-sonnet-4-5, 3 turns" in shown
    data = cli.json("run", "show", run_id)
    assert {k: data[k] for k in ("agent", "tokens_in", "tokens_out", "cost_usd", "model")} == {
        "agent": "shell",
        "tokens_in": 12_345,
        "tokens_out": 678,
        "cost_usd": 0.0421,
        "model": "claude-sonnet-4-5",
    }
    assert data["turns"] == 3
    metrics = cli.json("metrics")
    assert metrics["usage"] == {
        "shell": {"tokens_in": 12_345, "tokens_out": 678, "cost_usd": 0.0421, "runs": 1}
    }
    table = cli.ok("metrics")
    assert "usage.shell.tokens_in" in table and "12345" in table


def test_run_show_has_no_usage_line_when_nothing_was_reported(cli: Cli) -> None:
    run_id = _finished_run(cli, RunDetails(outcome="landed", exit_code=0))
    assert "usage" not in cli.ok("run", "show", run_id)
    assert cli.json("run", "show", run_id)["tokens_in"] is None


def test_task_add_and_plan_files_keep_the_budget(cli: Cli, tmp_path: Path) -> None:
    added = cli.json("task", "add", "true", "--budget", "200k")
    assert added["budget"] == {"tokens": 200_000, "usd": None}
    assert "200,000 tokens" in cli.ok("task", "show", added["id"])
    plan = tmp_path / "plan.yaml"
    plan.write_text(
        "tasks:\n  - name: a\n    instruction: one\n    budget: 2.5usd\n"
        "  - name: b\n    instruction: two\n    budget: {tokens: 1.5M, usd: 3}\n"
    )
    cli.ok("task", "import", str(plan))
    budgets = {t["title"]: t["budget"] for t in cli.tasks()}
    assert budgets["one"] == {"tokens": None, "usd": 2.5}
    assert budgets["two"] == {"tokens": 1_500_000, "usd": 3.0}


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (("exec", "true", "--budget", "lots"), ("--budget: 'lots' is not a token count",)),
        (("exec", "true", "--budget", "0"), ("--budget: a token budget must be above 0",)),
        (("task", "add", "true", "--budget", "2.5"), ("--budget: '2.5': tokens are whole",)),
    ],
)
def test_a_bad_budget_option_is_one_line(
    cli: Cli, args: tuple[str, ...], needles: tuple[str, ...]
) -> None:
    assert_one_line_error(cli(*args), *needles)
    assert not (cli.repo / ".capataz" / "progress").exists()  # nothing ran


def test_a_bad_budget_in_a_plan_file_names_the_task(cli: Cli, tmp_path: Path) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text("tasks:\n  - name: a\n    instruction: one\n    budget: -3usd\n")
    assert_one_line_error(cli("task", "import", str(plan)), "task a: budget")
    assert cli.tasks() == []


def test_a_bad_budget_in_the_config_names_the_key(cli: Cli) -> None:
    (cli.repo / "capataz.toml").write_text(
        '[agents.shell]\ncommand = ["bash", "-c", "{instruction}"]\nbudget = {usd = "free"}\n'
    )
    assert_one_line_error(
        cli("exec", "true"), "capataz.toml:3", "agents.shell.budget", "'free' is not an amount"
    )
