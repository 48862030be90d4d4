"""``GET /metrics``: Prometheus text. A custom collector reads the store on every
scrape, so the figures are the database's, not this process's: several servers over
one database report the same numbers, and a restart loses nothing."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from capataz.api.auth import Access, requires
from capataz.api.deps import store_of
from capataz.api.event_hub import EventHub
from capataz.store import Store, TokenInfo

__all__ = ["ClaimCollector", "EventReadCollector", "StoreCollector", "router"]

router = APIRouter(tags=["metrics"])
Reader = Annotated[TokenInfo, Depends(requires(Access.READ))]
BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)


class StoreCollector(Collector):
    """Queue depth by state, runners, fail rate, backlog age, decisions by kind, a
    histogram of the newest finished runs' durations, and the tokens and dollars the
    agents reported, summed over every stored run by agent (counters: they only grow
    as runs are added)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def collect(self) -> Iterator[Metric]:
        figures = self.store.metrics()
        stats = self.store.runs.statistics()
        tasks = GaugeMetricFamily("capataz_tasks", "Tasks by state", labels=["state"])
        for state, count in figures["tasks"].items():
            tasks.add_metric([state], count)
        yield tasks
        yield GaugeMetricFamily(
            "capataz_runners_online", "Runners heartbeating", value=figures["runners"]["online"]
        )
        yield GaugeMetricFamily(
            "capataz_runners_offline", "Runners not heartbeating", figures["runners"]["offline"]
        )
        yield GaugeMetricFamily(
            "capataz_runs_fail_rate_last_20",
            "Share of the last 20 finished runs that failed or blocked",
            value=figures["runs"]["fail_rate_last_20"],
        )
        oldest = figures["backlog"]["oldest_ready_age_seconds"]
        yield GaugeMetricFamily(
            "capataz_backlog_oldest_ready_age_seconds",
            "How long the oldest due ready task has waited (0 when none)",
            value=oldest or 0.0,
        )
        kinds = GaugeMetricFamily(
            "capataz_decisions", "Decisions recorded, by kind", labels=["decision"]
        )
        for kind, count in sorted(stats["decisions"].items()):
            kinds.add_metric([kind], count)
        yield kinds
        yield _durations(stats["durations"])
        yield from _usage(figures["usage"])
        yield from _planner(figures["planner"])


def _usage(by_agent: dict[str, dict[str, Any]]) -> Iterator[Metric]:
    tokens = CounterMetricFamily(
        "capataz_agent_tokens",
        "Tokens the agents reported, over stored runs, by agent and direction",
        labels=["agent", "direction"],
    )
    cost = CounterMetricFamily(
        "capataz_agent_cost_usd",
        "Dollars the agents reported, over stored runs, by agent",
        labels=["agent"],
    )
    for agent, used in sorted(by_agent.items()):
        tokens.add_metric([agent, "in"], used["tokens_in"])
        tokens.add_metric([agent, "out"], used["tokens_out"])
        cost.add_metric([agent], used["cost_usd"] or 0.0)
    yield tokens
    yield cost


def _planner(used: dict[str, Any]) -> Iterator[Metric]:
    calls = CounterMetricFamily(
        "capataz_planner_calls",
        "Calls the planner made to its model API, by model and whether they failed",
        labels=["model", "result"],
    )
    tokens = CounterMetricFamily(
        "capataz_planner_tokens",
        "Tokens the planner's calls used, by model and direction",
        labels=["model", "direction"],
    )
    cost = CounterMetricFamily(
        "capataz_planner_cost_usd",
        "Dollars the planner's calls cost at [planner] price, by model",
        labels=["model"],
    )
    for model, figures in used["by_model"].items():
        calls.add_metric([model, "answered"], figures["calls"] - figures["failed"])
        calls.add_metric([model, "failed"], figures["failed"])
        tokens.add_metric([model, "in"], figures["tokens_in"])
        tokens.add_metric([model, "out"], figures["tokens_out"])
        cost.add_metric([model], figures["cost_usd"] or 0.0)
    yield calls
    yield tokens
    yield cost


class ClaimCollector(Collector):
    """The ``/runner/claim`` requests this server process answered, by outcome
    (``claimed``, ``empty``, ``claimed_after_wait``, ``empty_after_wait``, ``gone``: the
    runner left during its long poll). Unlike the store's figures these are the
    process's own: they show whether idle runners long-poll instead of hammering."""

    def __init__(self, claims: Mapping[str, int], waiting: int) -> None:
        self.claims = dict(claims)
        self.waiting = waiting

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "capataz_runner_claim_requests",
            "Runner claim requests answered by this server process, by outcome",
            labels=["outcome"],
        )
        for outcome, count in sorted(self.claims.items()):
            family.add_metric([outcome], float(count))
        yield family
        yield GaugeMetricFamily(
            "capataz_runner_claims_waiting",
            "Long-poll claims this server process holds right now",
            value=float(self.waiting),
        )


class EventReadCollector(Collector):
    """Reads of the events table for ``GET /events`` by this server process: the hub's
    (one reader, whatever the number of streams) and the streams' own (only a backlog
    at connect), so a regression to per-client polling shows as ``client`` growing."""

    def __init__(self, hub: EventHub) -> None:
        self.hub = hub

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "capataz_event_reads",
            "Reads of the events table for live event streams, by reader",
            labels=["reader"],
        )
        family.add_metric(["hub"], float(self.hub.hub_reads))
        family.add_metric(["client"], float(self.hub.client_reads))
        yield family
        yield GaugeMetricFamily(
            "capataz_event_streams", "Live event streams connected", value=self.hub.streams
        )


def _durations(values: list[float]) -> HistogramMetricFamily:
    counts = [sum(1 for v in values if v <= bound) for bound in BUCKETS]
    buckets = [(_le(bound), float(n)) for bound, n in zip(BUCKETS, counts, strict=True)]
    buckets.append(("+Inf", float(len(values))))
    return HistogramMetricFamily(
        "capataz_recent_run_duration_seconds",
        "Wall-clock seconds of the newest finished runs (up to 500)",
        buckets=buckets,
        sum_value=sum(values),
    )


def _le(bound: float) -> str:
    return str(int(bound)) if bound.is_integer() else str(bound)


@router.get(
    "/metrics",
    summary="Prometheus text exposition",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}},
)
def prometheus(request: Request, _: Reader) -> Response:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(store_of(request)))
    hub = request.app.state.ready_hub
    registry.register(ClaimCollector(hub.claims, hub.waiting))
    registry.register(EventReadCollector(request.app.state.event_hub))
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
