"""The planner's failures, each one line with its fix, typed so that the CLI prints
them (exit 2) and the API answers them by type (:mod:`capataz.api.errors`): a
configuration or credential the operator must provide is a 409 (the request is fine,
the project is not ready), the model API failing is a 5xx of its own kind (502: it
answered wrongly, 503: it is busy or away, 504: it did not answer in time)."""

from __future__ import annotations

from capataz.errors import CapatazError

__all__ = [
    "PlannerAnswerError",
    "PlannerCredentialWaiting",
    "PlannerError",
    "PlannerNotConfigured",
    "PlannerRateLimited",
    "PlannerTimeout",
    "PlannerUnauthorized",
    "PlannerUnreachable",
    "PlannerUpstreamError",
]


class PlannerError(CapatazError):
    """Base of the planner's errors; ``code`` is the API's error code for it."""

    code = "planner_error"


class PlannerNotConfigured(PlannerError):
    """capataz.toml has no ``[planner]`` table: there is no planner to run (409)."""

    code = "planner_not_configured"


class PlannerCredentialWaiting(PlannerError):
    """The planner's API key is not in the vault yet: its credential request is
    WAITING (409, as for tasks that wait for a credential: nothing is wrong with the
    request, the project is not ready)."""

    code = "credential_waiting"


class PlannerUpstreamError(PlannerError):
    """The model API answered with an error capataz has no better word for (502)."""

    code = "planner_upstream"


class PlannerUnauthorized(PlannerUpstreamError):
    """The model API refused the key (401/403): retrying would not help (502)."""

    code = "planner_unauthorized"


class PlannerAnswerError(PlannerUpstreamError):
    """The model answered, but not with the JSON asked for (502)."""

    code = "planner_bad_answer"


class PlannerRateLimited(PlannerError):
    """The model API said 429 and kept saying it through every retry (503)."""

    code = "planner_rate_limited"


class PlannerUnreachable(PlannerError):
    """The model API could not be reached at all (503)."""

    code = "planner_unreachable"


class PlannerTimeout(PlannerError):
    """The model API did not answer within ``[planner] timeout`` (504)."""

    code = "planner_timeout"
