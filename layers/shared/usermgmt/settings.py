"""Configuration: one frozen model read from the environment on first use (never at import)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

MAX_BODY_BYTES = 16 * 1024
# Longer than any Auth0 user id ("provider|id"), well under DynamoDB's 2048-byte key limit.
MAX_USER_ID_BYTES = 512


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    table_name: str = Field(min_length=1)
    stage: str = "dev"

    auth0_domain: str = "localhost"
    auth0_base_url: str = ""  # default https://<auth0_domain>
    auth0_client_id: str = ""
    auth0_client_secret_arn: str = ""
    auth0_mgmt_audience: str = ""  # default https://<auth0_domain>/api/v2/
    auth0_connection: str = "Username-Password-Authentication"
    auth0_timeout_seconds: float = Field(default=3.0, gt=0, le=10)
    auth0_revoke_sessions: bool = False

    ses_sender: str = "no-reply@example.com"
    ses_configuration_set: str = ""
    public_base_url: str = "http://127.0.0.1:3000"

    email_change_policy: Literal["verify", "locked"] = "verify"
    reset_link_ttl_seconds: int = Field(default=1800, ge=1, le=86400)
    verify_link_ttl_seconds: int = Field(default=86400, ge=1, le=7 * 86400)

    reset_limit_per_address: int = Field(default=5, ge=1)
    reset_limit_per_ip: int = Field(default=30, ge=1)
    rate_limit_window_seconds: int = Field(default=3600, ge=1)

    sync_max_attempts: int = Field(default=8, ge=1)
    sync_base_delay_seconds: float = Field(default=30.0, ge=0)
    sync_max_delay_seconds: float = Field(default=3600.0, ge=0)
    # long enough for a whole push (up to four Auth0 calls within their timeouts): see SyncEngine._fence
    sync_lease_seconds: int = Field(default=60, ge=1)
    sync_batch_size: int = Field(default=25, ge=1, le=100)

    cleanup_grace_seconds: int = Field(default=86400, ge=0)
    cleanup_max_items: int = Field(default=1000, ge=1)

    @model_validator(mode="after")
    def _derive(self) -> Settings:
        if not self.auth0_base_url:
            object.__setattr__(self, "auth0_base_url", f"https://{self.auth0_domain}")
        if not self.auth0_mgmt_audience:
            object.__setattr__(self, "auth0_mgmt_audience", f"https://{self.auth0_domain}/api/v2/")
        object.__setattr__(self, "public_base_url", self.public_base_url.rstrip("/"))
        object.__setattr__(self, "auth0_base_url", self.auth0_base_url.rstrip("/"))
        return self

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        values = {name: env[name.upper()] for name in cls.model_fields if name.upper() in env}
        return cls.model_validate(values)
