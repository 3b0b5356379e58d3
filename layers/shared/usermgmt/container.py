"""The composition root: builds the service from settings, lazily, once per container.

Nothing here runs at import. Tests replace the whole container with ``override``; the local
gateway calls ``reset`` when it switches a function's environment.
"""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING, Any

from usermgmt.clock import SystemClock
from usermgmt.settings import Settings

if TYPE_CHECKING:
    from usermgmt.adapters.dynamo import DynamoStore
    from usermgmt.ports import Clock, IdentityProvider, Mailer
    from usermgmt.service.users import UserService


def aws_client(service: str) -> Any:
    import boto3
    from botocore.config import Config

    config = Config(connect_timeout=2, read_timeout=5, retries={"mode": "standard", "max_attempts": 3})
    return boto3.client(service, config=config)  # type: ignore[call-overload]


class Container:
    def __init__(self, settings: Settings | None = None, **overrides: Any) -> None:
        self.settings = settings or Settings.from_env()
        for name, value in overrides.items():
            setattr(self, name, value)

    @cached_property
    def clock(self) -> Clock:
        return SystemClock()

    @cached_property
    def store(self) -> DynamoStore:
        from usermgmt.adapters.dynamo import DynamoStore

        return DynamoStore(aws_client("dynamodb"), self.settings.table_name)

    @cached_property
    def idp(self) -> IdentityProvider:
        from usermgmt.adapters.auth0 import Auth0Config, Auth0IdentityProvider, ClientCredentialsToken

        s = self.settings
        config = Auth0Config(
            base_url=s.auth0_base_url,
            client_id=s.auth0_client_id,
            mgmt_audience=s.auth0_mgmt_audience,
            connection=s.auth0_connection,
            timeout_seconds=s.auth0_timeout_seconds,
        )
        arn = s.auth0_client_secret_arn

        def secret() -> str:
            from aws_lambda_powertools.utilities.parameters import get_secret

            return str(get_secret(arn, max_age=3600))

        return Auth0IdentityProvider(config, ClientCredentialsToken(config, secret))

    @cached_property
    def mailer(self) -> Mailer:
        from usermgmt.adapters.ses import SesMailer

        return SesMailer(aws_client("sesv2"), self.settings.ses_sender, self.settings.ses_configuration_set)

    @cached_property
    def users(self) -> UserService:
        from usermgmt.service.users import UserService

        return UserService(self)


_current: Container | None = None


def get() -> Container:
    global _current
    if _current is None:
        _current = Container()
    return _current


def override(container: Container | None) -> None:
    global _current
    _current = container


def reset() -> None:
    override(None)
