"""The composition root: the only module that builds adapters and services, lazily, once each.

Nothing here runs at import. Handlers reach a use case in one shape, ``container.get().<service>.<use
case>(...)``. Tests replace the adapters with keyword overrides (``Container(settings, store=...)``) or
the whole container with ``override``; the local gateway calls ``reset`` when it switches a function's
environment.
"""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING, Any

from usermgmt.clock import SystemClock
from usermgmt.settings import Settings

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer, IdempotencyConfig

    from usermgmt.ports import Clock, Deps, EventBus, IdentityProvider, JobQueue, Mailer
    from usermgmt.service.bulk import BulkService
    from usermgmt.service.cleanup import CleanupService
    from usermgmt.service.deliverability import DeliverabilityService
    from usermgmt.service.export import ExportService
    from usermgmt.service.invitations import InvitationService
    from usermgmt.service.lifecycle import LifecycleService
    from usermgmt.service.lists import ListService
    from usermgmt.service.outbox import EventPublisher
    from usermgmt.service.passwords import PasswordService
    from usermgmt.service.public import PublicRequests
    from usermgmt.service.sync import SyncEngine
    from usermgmt.service.users import UserService
    from usermgmt.service.verification import VerificationService
    from usermgmt.service.writes import Writer
    from usermgmt.store import UserStore

IDEMPOTENCY_SECONDS = 86400  # longer than any retry window (EventBridge 1 h here, Lambda async 6 h)


def aws_client(service: str) -> Any:
    import boto3
    from botocore.config import Config

    from usermgmt import budget

    # bounded so that one call's worst case (budget.AWS_CALL_SECONDS) fits a request's time budget
    config = Config(
        connect_timeout=budget.AWS_CONNECT_TIMEOUT_SECONDS,
        read_timeout=budget.AWS_READ_TIMEOUT_SECONDS,
        retries={"mode": "standard", "max_attempts": budget.AWS_MAX_ATTEMPTS},
    )
    return boto3.client(service, config=config)  # type: ignore[call-overload]


class Container:
    def __init__(
        self,
        settings: Settings | None = None,
        *,
        store: UserStore | None = None,
        idp: IdentityProvider | None = None,
        mailer: Mailer | None = None,
        clock: Clock | None = None,
        bus: EventBus | None = None,
        queue: JobQueue | None = None,
        public_queue: JobQueue | None = None,
    ) -> None:
        self.settings = settings or Settings.from_env()
        self._store = store
        self._idp = idp
        self._mailer = mailer
        self._clock = clock
        self._bus = bus
        self._queue = queue
        self._public_queue = public_queue

    # ------------------------------------------------------------------------------ adapters
    @cached_property
    def deps(self) -> Deps:
        from usermgmt.ports import Deps

        return Deps(
            settings=self.settings,
            clock=self._clock or SystemClock(),
            store=self._store or self._dynamo_store(),
            idp=self._idp or self._auth0(),
            mailer=self._mailer or self._ses(),
        )

    def _dynamo_store(self) -> UserStore:
        from usermgmt.adapters.dynamo import DynamoStore

        return DynamoStore(aws_client("dynamodb"), self.settings.table_name)

    def _auth0(self) -> IdentityProvider:
        from usermgmt.adapters.auth0 import Auth0Config, Auth0IdentityProvider, ClientCredentialsToken

        s = self.settings
        config = Auth0Config(
            base_url=s.auth0_base_url,
            client_id=s.auth0_client_id,
            mgmt_audience=s.auth0_mgmt_audience,
            connection=s.auth0_connection,
            timeout_seconds=s.auth0_timeout_seconds,
        )
        from usermgmt import budget
        from usermgmt.adapters.secrets import CachedSecret

        # Rotation: a container that still holds an old secret gets a 401, drops its token and reads
        # the secret again once its cache ends (5 minutes); until then the sync defers (never gives up).
        secret = CachedSecret(
            s.auth0_client_secret_arn,
            lambda: aws_client("secretsmanager"),
            # after the read: the token fetch and the Management API call, then settling the outcome
            then_seconds=2 * s.auth0_timeout_seconds + budget.AWS_CALL_SECONDS,
        )
        return Auth0IdentityProvider(config, ClientCredentialsToken(config, secret))

    def _ses(self) -> Mailer:
        from usermgmt.adapters.ses import SesMailer

        return SesMailer(
            lambda: aws_client("sesv2"), self.settings.ses_sender, self.settings.ses_configuration_set
        )

    @property
    def store(self) -> UserStore:
        return self.deps.store

    @property
    def idp(self) -> IdentityProvider:
        return self.deps.idp

    @property
    def mailer(self) -> Mailer:
        return self.deps.mailer

    @property
    def clock(self) -> Clock:
        return self.deps.clock

    @cached_property
    def idempotency(self) -> tuple[DynamoDBPersistenceLayer, IdempotencyConfig]:
        """Powertools idempotency on the users table (``pk``/``sk``, DynamoDB TTL on ``ttl``)."""
        from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer, IdempotencyConfig

        layer = DynamoDBPersistenceLayer(
            table_name=self.settings.table_name,
            key_attr="pk",
            sort_key_attr="sk",
            expiry_attr="ttl",
            boto3_client=aws_client("dynamodb"),
        )
        return layer, IdempotencyConfig(event_key_jmespath="id", expires_after_seconds=IDEMPOTENCY_SECONDS)

    # ------------------------------------------------------------------------------ services
    @cached_property
    def sync(self) -> SyncEngine:
        from usermgmt.service.sync import SyncEngine

        return SyncEngine(self.deps)

    @cached_property
    def writer(self) -> Writer:
        from usermgmt.service.admins import AdminCounter
        from usermgmt.service.bulk import BulkItems
        from usermgmt.service.lists import ListIndex
        from usermgmt.service.outbox import Outbox
        from usermgmt.service.writes import Writer

        # derived writers: asked for their ops with every commit (the outbox event, membership entries
        # and account counts of the users list, the count of active platform administrators, the
        # result of a bulk job's item)
        return Writer(
            self.deps, self.sync, [Outbox(self.deps), ListIndex(), AdminCounter(), BulkItems(self.deps)]
        )

    @cached_property
    def bus(self) -> EventBus:
        if self._bus is not None:
            return self._bus
        from usermgmt.adapters.eventbridge import EventBridgeBus

        s = self.settings
        return EventBridgeBus(lambda: aws_client("events"), s.user_events_bus_name, s.user_events_source)

    @cached_property
    def publisher(self) -> EventPublisher:
        from usermgmt.service.outbox import EventPublisher

        return EventPublisher(self.deps, self.bus)

    @cached_property
    def users(self) -> UserService:
        from usermgmt.service.users import UserService

        return UserService(self.deps, self.writer)

    @cached_property
    def lifecycle(self) -> LifecycleService:
        from usermgmt.service.lifecycle import LifecycleService

        return LifecycleService(self.deps, self.writer)

    @cached_property
    def passwords(self) -> PasswordService:
        from usermgmt.service.passwords import PasswordService

        return PasswordService(self.deps, self.writer)

    @cached_property
    def verification(self) -> VerificationService:
        from usermgmt.service.verification import VerificationService

        return VerificationService(self.deps, self.writer)

    @cached_property
    def deliverability(self) -> DeliverabilityService:
        from usermgmt.service.deliverability import DeliverabilityService

        return DeliverabilityService(self.deps, self.writer)

    @cached_property
    def cleanup(self) -> CleanupService:
        from usermgmt.service.cleanup import CleanupService

        return CleanupService(self.deps, self.writer)

    @cached_property
    def invitations(self) -> InvitationService:
        from usermgmt.service.invitations import InvitationService

        return InvitationService(self.deps, self.writer)

    @cached_property
    def lists(self) -> ListService:
        from usermgmt.service.lists import ListService

        return ListService(self.deps)

    @cached_property
    def export(self) -> ExportService:
        from usermgmt.service.export import ExportService

        return ExportService(self.deps, self.writer)

    @cached_property
    def queue(self) -> JobQueue:
        if self._queue is not None:
            return self._queue
        from usermgmt.adapters.sqs import SqsQueue

        return SqsQueue(lambda: aws_client("sqs"), self.settings.bulk_queue_url)

    @cached_property
    def public_queue(self) -> JobQueue:
        if self._public_queue is not None:
            return self._public_queue
        from usermgmt.adapters.sqs import SqsQueue

        return SqsQueue(lambda: aws_client("sqs"), self.settings.public_queue_url)

    @cached_property
    def public(self) -> PublicRequests:
        from usermgmt.service.public import PublicRequests

        # services are built when a queued request needs them (the routes only queue)
        return PublicRequests(
            self.public_queue,
            lambda email, request_id, retry: self.passwords.request_public(email, request_id, retry),
            {
                "reset": lambda token, request_id, retry: self.passwords.renew(token, request_id, retry),
                "verify": lambda token, request_id, retry: self.verification.renew(token, request_id, retry),
                "invite": lambda token, request_id, retry: self.invitations.renew(token, request_id, retry),
            },
        )

    @cached_property
    def bulk(self) -> BulkService:
        from usermgmt.service.bulk import BulkService, ListTargets

        return BulkService(
            self.deps,
            self.queue,
            users=self.users,
            lifecycle=self.lifecycle,
            passwords=self.passwords,
            targets=ListTargets(self.lists),
            sync=self.sync,
        )


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
