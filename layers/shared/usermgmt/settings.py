"""Configuration: one frozen record read from the environment on first use (never at import).

A plain dataclass with its own checks, not a pydantic model: building the first pydantic model of a
process costs about 150 ms, which every cold start would pay for a dozen numbers (bench/README.md,
"Cold start"). Every field is read from the upper-cased variable of its name (``TABLE_NAME``, ...);
a bad value raises ``SettingsError`` naming the variable, at the first request, never at import.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

MAX_BODY_BYTES = 16 * 1024
# POST /bulk-jobs: up to 10,000 user ids (about 33 bytes each as JSON) do not fit in 16 KiB
MAX_BULK_BODY_BYTES = 1024 * 1024
# Longer than any Auth0 user id ("provider|id"), well under DynamoDB's 2048-byte key limit.
MAX_USER_ID_BYTES = 512

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


class SettingsError(ValueError):
    """A configuration value is missing or out of its range; the message names the variable."""


@dataclass(frozen=True)
class Settings:
    table_name: str
    stage: str = "dev"

    auth0_domain: str = "localhost"
    auth0_base_url: str = ""  # default https://<auth0_domain>
    auth0_client_id: str = ""
    auth0_client_secret_arn: str = ""
    auth0_mgmt_audience: str = ""  # default https://<auth0_domain>/api/v2/
    auth0_connection: str = "Username-Password-Authentication"
    auth0_timeout_seconds: float = 3.0
    auth0_revoke_sessions: bool = False

    ses_sender: str = "no-reply@example.com"
    ses_configuration_set: str = ""
    public_base_url: str = "http://127.0.0.1:3000"

    email_change_policy: str = "verify"
    reset_link_ttl_seconds: int = 1800
    verify_link_ttl_seconds: int = 86400
    invite_link_ttl_seconds: int = 604800

    reset_limit_per_address: int = 5
    reset_limit_per_ip: int = 30
    rate_limit_window_seconds: int = 3600
    # resets an administrator or the user themselves start: their own budget per address, so that
    # anonymous requests cannot spend it (security notes L4)
    reset_limit_per_address_authenticated: int = 5
    # verification emails and email-change starts, per user and per recipient address (H1, L5)
    verify_limit_per_user: int = 5
    verify_limit_per_address: int = 3
    # key of the HMAC that names rate counters and link address hashes (L15); empty: plain SHA-256
    hash_pepper: str = ""

    # SPEC section 17: the sign-in behind a token for sensitive self-service changes (0: no check)
    reauth_max_age_seconds: int = 900
    auth_time_claim: str = "auth_time"

    sync_max_attempts: int = 8
    sync_base_delay_seconds: float = 30.0
    sync_max_delay_seconds: float = 3600.0
    # long enough for a whole push (up to four Auth0 calls within their timeouts): see SyncEngine._fence
    sync_lease_seconds: int = 60
    sync_batch_size: int = 25

    user_events_bus_name: str = ""  # the product's bus (publish-events only)
    user_events_source: str = "usermgmt"
    publish_max_attempts: int = 10
    outbox_sweep_grace_seconds: float = 5.0  # the sweep leaves younger events to the stream path
    outbox_sweep_batch: int = 100

    cleanup_grace_seconds: int = 86400
    cleanup_max_items: int = 1000

    # the users list: cursors are signed with a key derived from this one (set per deployment by the
    # template; empty: derived from the table name, for local runs and tests only)
    list_cursor_key: str = ""
    list_cursor_ttl_seconds: int = 3600
    # machine callers (client-credentials tokens) allowed at all: comma-separated client ids
    machine_client_ids: str = ""
    # bulk jobs (SPEC section 14)
    bulk_queue_url: str = ""
    # public requests (POST /password-reset, the renew routes): their account work after the answer
    public_queue_url: str = ""
    bulk_max_active_jobs: int = 5
    bulk_retention_days: int = 30
    bulk_max_targets: int = 10000

    def __post_init__(self) -> None:
        for name, (low, high) in _RANGES.items():
            value = getattr(self, name)
            if (low is not None and value < low) or (high is not None and value > high):
                raise SettingsError(f"{name.upper()} must be in [{low}, {high}], got {value}")
        if not self.table_name:
            raise SettingsError("TABLE_NAME must be set")
        if self.auth0_timeout_seconds <= 0:
            raise SettingsError("AUTH0_TIMEOUT_SECONDS must be positive")
        _check_public_base_url(self.stage, self.public_base_url)
        if not self.auth_time_claim:
            raise SettingsError("AUTH_TIME_CLAIM must name a claim")
        if self.email_change_policy not in ("verify", "locked"):
            raise SettingsError("EMAIL_CHANGE_POLICY must be verify or locked")
        domain = self.auth0_domain
        derived = {
            "auth0_base_url": (self.auth0_base_url or f"https://{domain}").rstrip("/"),
            "auth0_mgmt_audience": self.auth0_mgmt_audience or f"https://{domain}/api/v2/",
            "public_base_url": self.public_base_url.rstrip("/"),
        }
        for name, value in derived.items():
            object.__setattr__(self, name, value)

    @property
    def machine_clients(self) -> frozenset[str]:
        return frozenset(c.strip() for c in self.machine_client_ids.split(",") if c.strip())

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            raw = env.get(f.name.upper())
            if raw is not None:
                values[f.name] = _parse(f.name, str(f.type), raw)
        if "table_name" not in values:
            raise SettingsError("TABLE_NAME must be set")
        return cls(**values)

    def replace(self, **changes: Any) -> Settings:
        """A copy with ``changes``, checked again."""
        return dataclasses.replace(self, **changes)


LOCAL_STAGES = frozenset({"local", "dev-local"})
_LOOPBACK = frozenset({"127.0.0.1", "localhost", "[::1]"})


def _check_public_base_url(stage: str, url: str) -> None:
    """Links in emails carry tokens: outside a local stage they go over https only (security notes L20).

    A loopback host is accepted anywhere (such a link never leaves the machine).
    """
    scheme, _, rest = url.partition("://")
    host = rest.split("/", 1)[0].rsplit("@", 1)[-1]
    host = host.split("]", 1)[0] + "]" if host.startswith("[") else host.split(":", 1)[0]
    if not rest or not host or scheme not in ("https", "http"):
        raise SettingsError(f"PUBLIC_BASE_URL must be an absolute http(s) URL, got {url!r}")
    if scheme == "http" and stage not in LOCAL_STAGES and host.lower() not in _LOOPBACK:
        raise SettingsError(f"PUBLIC_BASE_URL must be https outside a local stage (STAGE={stage})")


# field -> (lowest, highest) allowed; None: unbounded
_RANGES: dict[str, tuple[float | None, float | None]] = {
    "auth0_timeout_seconds": (None, 10),
    "reset_link_ttl_seconds": (1, 86400),
    "verify_link_ttl_seconds": (1, 7 * 86400),
    "invite_link_ttl_seconds": (1, 30 * 86400),
    "reset_limit_per_address": (1, None),
    "reset_limit_per_ip": (1, None),
    "rate_limit_window_seconds": (1, None),
    "reset_limit_per_address_authenticated": (1, None),
    "verify_limit_per_user": (1, None),
    "verify_limit_per_address": (1, None),
    "reauth_max_age_seconds": (0, 30 * 86400),
    "sync_max_attempts": (1, None),
    "sync_base_delay_seconds": (0, None),
    "sync_max_delay_seconds": (0, None),
    "sync_lease_seconds": (1, None),
    "sync_batch_size": (1, 100),
    "publish_max_attempts": (1, None),
    "outbox_sweep_grace_seconds": (0, None),
    "outbox_sweep_batch": (1, 1000),
    "cleanup_grace_seconds": (0, None),
    "cleanup_max_items": (1, None),
    "list_cursor_ttl_seconds": (1, 7 * 86400),
    "bulk_max_active_jobs": (1, 1000),
    "bulk_retention_days": (1, 365),
    "bulk_max_targets": (1, 10000),
}


def _parse(name: str, kind: str, raw: str) -> Any:
    try:
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
    except ValueError:
        raise SettingsError(f"{name.upper()} must be a number, got {raw!r}") from None
    if kind == "bool":
        lowered = raw.strip().lower()
        if lowered in _TRUE | _FALSE:
            return lowered in _TRUE
        raise SettingsError(f"{name.upper()} must be true or false, got {raw!r}")
    return raw
