"""Logger, metrics and tracer shared by every function (Powertools), and the one decorator stack.

The Powertools Tracer needs the X-Ray SDK, whose import creates a botocore client for sampling
rules: about 0.4 s on every cold start, even with tracing disabled. Lambda's own X-Ray segments
(``Tracing: Active``) cost nothing at start, so the in-process Tracer is opt-in: set
``USERMGMT_XRAY_SDK=true`` to get subsegments for AWS and Auth0 calls (see docs/decisions.md).
"""

from __future__ import annotations

import functools
import os
import warnings
from collections.abc import Callable
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit

# An invocation that changed nothing (a 404, an idle schedule) has no metric to publish; that is fine.
warnings.filterwarnings("ignore", message="No application metrics to publish", category=UserWarning)

logger = Logger(use_rfc3339=True)
metrics = Metrics()

Handler = Callable[[dict[str, Any], Any], Any]

__all__ = ["MetricUnit", "count", "lambda_entry", "logger", "metrics"]


def count(name: str, value: float = 1) -> None:
    metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)


def _xray_enabled() -> bool:
    return os.environ.get("USERMGMT_XRAY_SDK", "false").lower() == "true"


@functools.cache
def _tracer() -> Any:
    from aws_lambda_powertools import Tracer  # imports the X-Ray SDK: only when asked for

    return Tracer()


def lambda_entry(correlation_id_path: str | None = None) -> Callable[[Handler], Handler]:
    """The decorator stack of every ``lambda_handler``: logger with correlation id, metrics, tracer."""

    def decorate(fn: Handler) -> Handler:
        @functools.wraps(fn)
        def traced(event: dict[str, Any], context: Any) -> Any:
            from usermgmt import budget

            with budget.invocation(context):  # the time this invocation has left (budget.py)
                if _xray_enabled():
                    return _tracer().capture_lambda_handler(fn)(event, context)
                return fn(event, context)

        with_metrics = metrics.log_metrics(traced)
        return logger.inject_lambda_context(correlation_id_path=correlation_id_path, log_event=False)(
            with_metrics
        )

    return decorate
