"""The Auth0 client secret, read from Secrets Manager within the invocation's time budget.

Powertools' ``SecretsProvider`` reads it over the bounded client of ``container.aws_client`` (the same
connect/read timeouts and attempts as every AWS call here) and caches it for ``max_age`` seconds, so a
rotated secret is picked up within that time. A read is started only when it still fits the invocation
together with what follows it (the token fetch and the Management API call); otherwise the caller gets
an error, which the Auth0 adapter turns into a transient ``IdpUnavailable`` (the sync retries).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from usermgmt import budget

SECRET_MAX_AGE_SECONDS = 300


class SecretOutOfTime(Exception):
    """Reading the secret could outlive the invocation: not started."""


class CachedSecret:
    def __init__(
        self,
        arn: str,
        client: Callable[[], Any],
        *,
        then_seconds: float,
        max_age: int = SECRET_MAX_AGE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._arn = arn
        self._client = client
        self._then = then_seconds  # what must still fit after the read
        self._max_age = max_age
        self._clock = clock
        self._provider: Any = None
        self._read_at: float | None = None

    def __call__(self) -> str:
        fresh = self._read_at is not None and self._clock() - self._read_at < self._max_age
        if not fresh and not budget.allows(budget.AWS_CALL_SECONDS + self._then):
            raise SecretOutOfTime(self._arn)
        if self._provider is None:
            from aws_lambda_powertools.utilities.parameters import SecretsProvider

            self._provider = SecretsProvider(boto3_client=self._client())
        value = str(self._provider.get(self._arn, max_age=self._max_age))
        if not fresh:
            self._read_at = self._clock()
        return value
