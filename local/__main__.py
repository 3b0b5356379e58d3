"""``python -m local``: the local stack of ``make run`` in one foreground process.

Start order: moto (local AWS) -> the template's resources -> local Auth0 -> seed -> gateway -> healthy.
Ctrl-C or SIGTERM stops everything; a port already in use is a clear error and exit code 1.

Configuration (environment, defaults in brackets):

* ``LOCAL_HOST`` [127.0.0.1], ``LOCAL_API_PORT`` [3000], ``LOCAL_AUTH0_PORT`` [4000],
  ``LOCAL_AWS_PORT`` [5000]
* ``API_AUDIENCE`` [https://api.usermgmt.local]: the audience the local Auth0 issues tokens for and the
  gateway's authorizer accepts; ``LOCAL_AUTH0_CLIENT_ID`` [local-login-client]: the client that may use
  the password grants.
* ``LOCAL_CORS_ORIGINS`` [http://localhost:8080,http://127.0.0.1:8080]: the template parameter
  ``CorsAllowedOrigins``: browser pages from these origins may call the API.
* ``LOCAL_LAMBDA_CONCURRENCY`` [4]: execution environments (worker processes) each function may have
  at once; started on demand, each serves one request at a time.
* ``SEED_FILE`` [local/seed.json], ``LOCAL_TEMPLATE`` [template.yaml], ``LOCAL_LOG_LEVEL`` [INFO],
  ``LOCAL_TRUST_X_FORWARDED_FOR`` [false].
* Every variable named like an upper-cased field of ``usermgmt.settings.Settings``
  (``RESET_LINK_TTL_SECONDS``, ``EMAIL_CHANGE_POLICY``, ``PUBLIC_BASE_URL``, ...) is passed into every
  function's environment, over the template's value.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shlex
import signal
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from local.auth0 import LocalAuth0
from local.auth0 import serve as serve_auth0
from local.aws import LocalAws, PortInUse, create_secret, create_stack_resources, ensure_port_free
from local.busview import BusView
from local.gateway import Gateway, ServerHandle
from local.gateway import serve as serve_gateway
from local.lambda_runtime import DEFAULT_CONCURRENCY, WorkerPoolRuntime
from local.queues import QueuePoller
from local.seed import SeededUser, SeedError, apply_seed, load_seed
from local.streams import StreamPoller
from local.template import Stack, TemplateError, load_stack, load_template
from usermgmt.adapters.dynamo import DynamoStore
from usermgmt.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
REGION = "eu-central-1"
M2M_CLIENT_ID = "local-m2m-client"
# Browser pages served from these origins may call the local API (a local front end's dev server).
DEFAULT_CORS_ORIGINS = "http://localhost:8080,http://127.0.0.1:8080"
SECRET_NAME = "usermgmt-local/auth0-m2m-client-secret"

log = logging.getLogger("local")


class ConfigError(Exception):
    pass


@dataclass(frozen=True)
class Config:
    host: str = "127.0.0.1"
    api_port: int = 3000
    auth0_port: int = 4000
    aws_port: int = 5000
    audience: str = "https://api.usermgmt.local"
    login_client_id: str = "local-login-client"
    seed_file: Path = ROOT / "local" / "seed.json"
    template: Path = ROOT / "template.yaml"
    log_level: str = "INFO"
    cors_origins: str = DEFAULT_CORS_ORIGINS
    concurrency: int = DEFAULT_CONCURRENCY
    passthrough: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Config:
        def port(name: str, default: int) -> int:
            raw = env.get(name, str(default))
            if not raw.isdigit() or not 0 < int(raw) < 65536:
                raise ConfigError(f"{name}={raw!r} is not a TCP port")
            return int(raw)

        def path(name: str, default: Path) -> Path:
            value = env.get(name)
            return Path(value).resolve() if value else default

        def concurrency() -> int:
            raw = env.get("LOCAL_LAMBDA_CONCURRENCY", str(DEFAULT_CONCURRENCY))
            if not raw.isdigit() or not 0 < int(raw) <= 64:
                raise ConfigError(f"LOCAL_LAMBDA_CONCURRENCY={raw!r} is not a number from 1 to 64")
            return int(raw)

        settings_names = {name.upper() for name in Settings.names()}
        return cls(
            host=env.get("LOCAL_HOST", "127.0.0.1"),
            api_port=port("LOCAL_API_PORT", 3000),
            auth0_port=port("LOCAL_AUTH0_PORT", 4000),
            aws_port=port("LOCAL_AWS_PORT", 5000),
            audience=env.get("API_AUDIENCE") or "https://api.usermgmt.local",
            login_client_id=env.get("LOCAL_AUTH0_CLIENT_ID") or "local-login-client",
            seed_file=path("SEED_FILE", ROOT / "local" / "seed.json"),
            template=path("LOCAL_TEMPLATE", ROOT / "template.yaml"),
            log_level=env.get("LOCAL_LOG_LEVEL", "INFO").upper(),
            concurrency=concurrency(),
            cors_origins=env.get("LOCAL_CORS_ORIGINS", DEFAULT_CORS_ORIGINS).strip(),
            passthrough={k: v for k, v in env.items() if k in settings_names},
        )

    @property
    def api_url(self) -> str:
        return f"http://{self.host}:{self.api_port}"

    @property
    def auth0_url(self) -> str:
        return f"http://{self.host}:{self.auth0_port}"

    @property
    def aws_url(self) -> str:
        return f"http://{self.host}:{self.aws_port}"

    @property
    def issuer(self) -> str:
        # tokens say https (as Auth0's do); the local Auth0 is served over plain http
        return f"https://{self.host}:{self.auth0_port}/"

    @property
    def sender_email(self) -> str:
        return self.passthrough.get("SES_SENDER", "no-reply@example.com")

    @property
    def public_base_url(self) -> str:
        return self.passthrough.get("PUBLIC_BASE_URL", self.api_url)


def template_parameters(
    config: Config, secret_arn: str, declared: Mapping[str, Any], machine_clients: str = ""
) -> dict[str, str]:
    """Local values of the template's parameters (only those the template declares)."""
    values = {
        "MachineClientIds": machine_clients,
        "Auth0Domain": f"{config.host}:{config.auth0_port}",
        "ApiAudience": config.audience,
        "Auth0ClientId": M2M_CLIENT_ID,
        "Auth0ClientSecretArn": secret_arn,
        "SenderIdentity": config.sender_email.rpartition("@")[2],
        "SenderEmail": config.sender_email,
        "SesConfigurationSet": config.passthrough.get("SES_CONFIGURATION_SET", "usermgmt-local"),
        "PublicBaseUrl": config.public_base_url,
        "CorsAllowedOrigins": config.cors_origins,
        "Stage": "local",  # an http PUBLIC_BASE_URL is allowed here only
    }
    from_settings = {
        "EmailChangePolicy": "EMAIL_CHANGE_POLICY",
        "Auth0RevokeSessions": "AUTH0_REVOKE_SESSIONS",
        "Auth0Connection": "AUTH0_CONNECTION",
    }
    for parameter, variable in from_settings.items():
        if variable in config.passthrough:
            values[parameter] = config.passthrough[variable]
    return {k: v for k, v in values.items() if k in declared}


def local_overrides(config: Config) -> dict[str, str]:
    """What the functions get on top of their template environment."""
    overrides = {
        "AUTH0_BASE_URL": config.auth0_url,
        "AWS_ENDPOINT_URL": config.aws_url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
        "POWERTOOLS_TRACE_DISABLED": "true",
        "POWERTOOLS_DEV": "false",
    }
    overrides.update(config.passthrough)
    return overrides


def _table_name(stack: Stack) -> str:
    names = {f.environment.get("TABLE_NAME") for f in stack.functions.values()} - {None}
    if len(names) == 1:
        return str(names.pop())
    if len(stack.tables) == 1:
        return next(iter(stack.tables.values())).name
    raise ConfigError("cannot tell which table to seed (functions name several TABLE_NAMEs)")


class LocalStack:
    """The running pieces; ``start`` in order, ``stop`` in reverse (safe after a partial start)."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.aws = LocalAws(config.host, config.aws_port, REGION)
        self.auth0: LocalAuth0 | None = None
        self.gateway: Gateway | None = None
        self.streams: StreamPoller | None = None
        self.queues: QueuePoller | None = None
        self.seeded: list[SeededUser] = []
        self._servers: list[ServerHandle | Any] = []
        self._aws_started = False

    def start(self) -> None:
        config = self.config
        for what, port in (
            ("local AWS (moto)", config.aws_port),
            ("local Auth0", config.auth0_port),
            ("API gateway", config.api_port),
        ):
            ensure_port_free(config.host, port, what)
        seed = load_seed(config.seed_file)  # fail on a bad seed file before anything starts

        self.aws.start()
        self._aws_started = True
        m2m_secret = secrets.token_urlsafe(32)
        secret_arn = create_secret(self.aws.client, SECRET_NAME, m2m_secret)
        declared = load_template(config.template).get("Parameters") or {}
        stack = load_stack(
            config.template,
            parameters=template_parameters(
                config, secret_arn, declared, ",".join(c.clientId for c in seed.machineClients)
            ),
            region=REGION,
            sqs_endpoint=self.aws.endpoint,
        )
        create_stack_resources(
            stack,
            self.aws.client,
            sender_identity=str(stack.parameters.get("SenderIdentity") or "") or None,
            configuration_set=str(stack.parameters.get("SesConfigurationSet") or "") or None,
        )

        connection = str(stack.parameters.get("Auth0Connection") or "Username-Password-Authentication")
        self.auth0 = LocalAuth0(
            issuer=config.issuer,
            public_url=config.auth0_url,
            api_audience=config.audience,
            login_client_id=config.login_client_id,
            m2m_client_id=M2M_CLIENT_ID,
            m2m_client_secret=m2m_secret,
            connection=connection,
        )
        for client in seed.machineClients:
            self.auth0.add_machine_client(client.clientId, client.clientSecret, client.scopes)
        self._servers.append(serve_auth0(self.auth0, config.host, config.auth0_port))

        store = DynamoStore(self.aws.client("dynamodb"), _table_name(stack))
        self.seeded = apply_seed(seed, store, self.auth0)

        self.gateway = Gateway(
            stack,
            jwks=f"{config.auth0_url}/.well-known/jwks.json",
            environment=local_overrides(config),
            aws=self.aws.client,
            runtime=WorkerPoolRuntime(REGION, concurrency=config.concurrency),
        )
        self.gateway.bus_view = BusView(stack, self.aws.client, self.gateway.events.put_event)
        self._servers.append(serve_gateway(self.gateway, config.host, config.api_port))
        self.gateway.prewarm()  # one warm execution environment per function before /_local/health is 200
        # the template's DynamoDB stream mappings (publish-events) and the product bus's view and rules
        self.streams = StreamPoller(stack, self.gateway.invoke)
        self.streams.start()
        # the template's SQS event source mappings (bulk-worker on the bulk jobs' queue)
        self.queues = QueuePoller(stack, self.aws.client("sqs"), self.gateway.invoke)
        self.queues.start()
        self.gateway.bus_view.start()
        self.gateway.mark_ready()

    def stop(self) -> None:
        if self.gateway is not None:
            self.gateway.ready = False
        if self.streams is not None:
            self.streams.stop()
        if self.queues is not None:
            self.queues.stop()
        if self.gateway is not None and self.gateway.bus_view is not None:
            self.gateway.bus_view.stop()
        while self._servers:
            server = self._servers.pop()
            try:
                server.shutdown()
            except Exception as exc:  # keep stopping the rest
                log.warning("stopping a server failed: %s", type(exc).__name__)
        if self.gateway is not None:
            self.gateway.close()  # the functions' execution environments
        if self._aws_started:
            self.aws.stop()
            self._aws_started = False


def banner(config: Config, seeded: list[SeededUser]) -> str:
    lines = [
        "",
        "usermgmt local stack is up",
        f"  API (gateway)      {config.api_url}    health: {config.api_url}/_local/health",
        f"  outbox             {config.api_url}/_local/outbox",
        f"  API reference      {config.api_url}/_local/docs    (OpenAPI: /_local/openapi.json)",
        f"  local Auth0        {config.auth0_url}    issuer: {config.issuer}",
        f"  local AWS (moto)   {config.aws_url}",
        f"  audience           {config.audience}",
        f"  login client id    {config.login_client_id}",
        f"  CORS origins       {config.cors_origins or '(none)'}",
        "",
        "Seeded logins (email / password: what they are):",
    ]
    width = max((len(u.email) for u in seeded), default=0)
    for user in seeded:
        lines.append(f"  {user.email.ljust(width)}  {user.password:<20}  {user.description}")
    example = next((u for u in seeded if "platform administrator" in u.description), None)
    example = example or next((u for u in seeded if u.status == "ACTIVE"), None)
    if example is not None:
        body = json.dumps(
            {
                "grant_type": "password",
                "username": example.email,
                "password": example.password,
                "audience": config.audience,
                "client_id": config.login_client_id,
                "scope": "openid",
            },
            separators=(",", ":"),
        )
        lines += [
            "",
            f"Try it (log in as {example.email}, then GET /me):",
            f"  TOKEN=$(curl -s -X POST {config.auth0_url}/oauth/token \\",
            "    -H 'content-type: application/json' \\",
            f"    -d {shlex.quote(body)} \\",
            "    | python3 -c 'import json,sys; print(json.load(sys.stdin)[\"access_token\"])')",
            f'  curl -s {config.api_url}/me -H "Authorization: Bearer $TOKEN"',
        ]
    lines += ["", "Ctrl-C stops everything.", ""]
    return "\n".join(lines)


def main() -> int:
    try:
        config = Config.from_env(os.environ)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    logging.basicConfig(
        level=getattr(logging, config.log_level, logging.INFO),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("botocore", "boto3", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    stack = LocalStack(config)
    try:
        stack.start()
    except PortInUse as exc:
        print(f"error: cannot start the {exc.what}: {exc.host}:{exc.port} is already in use", file=sys.stderr)
        print("       stop whatever uses it, or choose other ports (LOCAL_*_PORT)", file=sys.stderr)
        stack.stop()
        return 1
    except (SeedError, TemplateError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        stack.stop()
        return 1
    except OSError as exc:
        print(f"error: cannot start the local stack: {exc}", file=sys.stderr)
        stack.stop()
        return 1
    except BaseException:
        stack.stop()
        raise
    print(banner(config, stack.seeded), flush=True)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        print("stopping the local stack ...", file=sys.stderr, flush=True)
        stack.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
