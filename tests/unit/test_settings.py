"""Configuration read from the environment: types, ranges and derived defaults, without pydantic."""

from __future__ import annotations

import pytest

from usermgmt.settings import Settings, SettingsError


def test_values_are_read_typed_from_upper_cased_variables() -> None:
    s = Settings.from_env(
        {
            "TABLE_NAME": "t",
            "AUTH0_DOMAIN": "tenant.example",
            "AUTH0_TIMEOUT_SECONDS": "1.5",
            "AUTH0_REVOKE_SESSIONS": "TRUE",
            "RESET_LINK_TTL_SECONDS": "60",
            "PUBLIC_BASE_URL": "https://users.example.com/",
            "UNRELATED": "ignored",
        }
    )
    assert (s.auth0_timeout_seconds, s.auth0_revoke_sessions, s.reset_link_ttl_seconds) == (1.5, True, 60)
    assert s.auth0_base_url == "https://tenant.example"
    assert s.auth0_mgmt_audience == "https://tenant.example/api/v2/"
    assert s.public_base_url == "https://users.example.com"  # no trailing slash in links


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({}, "TABLE_NAME"),
        ({"TABLE_NAME": "t", "SYNC_BATCH_SIZE": "0"}, "SYNC_BATCH_SIZE"),
        ({"TABLE_NAME": "t", "RESET_LINK_TTL_SECONDS": "ten"}, "RESET_LINK_TTL_SECONDS"),
        ({"TABLE_NAME": "t", "AUTH0_REVOKE_SESSIONS": "maybe"}, "AUTH0_REVOKE_SESSIONS"),
        ({"TABLE_NAME": "t", "EMAIL_CHANGE_POLICY": "sometimes"}, "EMAIL_CHANGE_POLICY"),
        ({"TABLE_NAME": "t", "AUTH0_TIMEOUT_SECONDS": "0"}, "AUTH0_TIMEOUT_SECONDS"),
    ],
)
def test_a_bad_value_names_its_variable(env: dict[str, str], names: str) -> None:
    with pytest.raises(SettingsError, match=names):
        Settings.from_env(env)


def test_replace_checks_again() -> None:
    s = Settings(table_name="t")
    assert s.replace(sync_lease_seconds=90).sync_lease_seconds == 90
    with pytest.raises(SettingsError):
        s.replace(sync_lease_seconds=0)


@pytest.mark.parametrize(
    ("stage", "url", "ok"),
    [
        ("prod", "https://users.example.com", True),
        ("prod", "http://users.example.com", False),
        ("dev", "http://users.example.com", False),
        ("local", "http://192.168.1.5:3000", True),
        ("dev-local", "http://devbox:3000", True),
        ("prod", "http://127.0.0.1:3000", True),  # loopback: the link never leaves the machine
        ("prod", "ftp://users.example.com", False),
        ("prod", "users.example.com", False),
    ],
)
def test_public_base_url_is_https_outside_a_local_stage(stage: str, url: str, ok: bool) -> None:
    from usermgmt.settings import Settings, SettingsError

    if ok:
        assert Settings(table_name="t", stage=stage, public_base_url=url).public_base_url == url
    else:
        with pytest.raises(SettingsError, match="PUBLIC_BASE_URL"):
            Settings(table_name="t", stage=stage, public_base_url=url)
