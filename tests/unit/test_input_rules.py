"""Names and emails refuse what would hide, reorder or break text (security notes L6, L7, T10).

The fuzz draws from every Unicode category, lone surrogates included, so it can produce the characters
the rules must refuse (format and bidi controls, private use, unassigned, surrogates) and checks what a
client sees: a 422 naming the field and an unchanged record, or the name stored as sent.
"""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.conftest import Env
from usermgmt.models import User, clean_name, normalize_email

UPDATE = "update-user"
REFUSED = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}


@pytest.fixture
def env(memory_env: Env) -> Env:
    return memory_env


@pytest.mark.parametrize(
    "name",
    [
        "\u200b",  # zero-width space alone
        "Bob\u200b",  # zero-width space
        "\u202eboB",  # right-to-left override
        "Bob\u2066x\u2069",  # bidi isolates
        "\ufeffBob",  # byte-order mark
        "Bob\ud800",  # lone surrogate
        "Bob\ue000",  # private use
        "Bob\U000f0000",  # supplementary private use
        "Bob\u0378",  # unassigned
        "Bob\u00ad",  # soft hyphen (format)
        "Bob\x00",
    ],
)
def test_names_refuse_invisible_bidi_private_unassigned_and_surrogate_characters(name: str) -> None:
    with pytest.raises(ValueError):
        clean_name(name)


@pytest.mark.parametrize("name", ["Zoë", "José María", "O'Brien-Smith", "山田", "Ærø", "Nguyễn"])
def test_names_of_real_people_pass(name: str) -> None:
    assert clean_name(name) == unicodedata.normalize("NFC", name)


@pytest.mark.parametrize(
    "email",
    [
        ".bob@x.example",
        "bob.@x.example",
        "bo..b@x.example",
        "bob@x..example",
        "bob@-x.example",
        "bob@x-.example",
        "bob@example",
        '"bob"@x.example',
        "bob@[192.0.2.1]",
        "b ob@x.example",
        "bob@bücher.example",
        "a" * 65 + "@x.example",
        "bob@" + "a" * 64 + ".example",
        "bob@@x.example",
    ],
)
def test_emails_refuse_what_rfc_5321_forbids(email: str) -> None:
    with pytest.raises(ValueError):
        normalize_email(email)


@pytest.mark.parametrize(
    "email",
    ["bob@x.example", "b.o.b+tag@sub.x.example", "o'hara@x.example", "Bob@X.Example", "a" * 64 + "@x.co"],
)
def test_ordinary_emails_pass(email: str) -> None:
    assert normalize_email(email) == email.lower()


def _expected(name: str) -> str | None:
    """The oracle: the name as stored, or None when it must be refused (SPEC: 1-100 visible characters)."""
    if any(0xD800 <= ord(c) <= 0xDFFF for c in name):
        return None
    value = unicodedata.normalize("NFC", name).strip()
    if any(unicodedata.category(c) in REFUSED for c in value) or not 1 <= len(value) <= 100:
        return None
    return value


_SEEN: list[str] = []
# every category, and surrogates (st.characters excludes Cs unless asked)
ANY_CHAR = st.characters(codec=None, exclude_categories=())
NASTY = st.sampled_from(["\u200b", "\u202e", "\u2067", "\ufeff", "\ud83d", "\ue000", "\u0378", "\u2028"])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.lists(st.one_of(ANY_CHAR, NASTY), min_size=1, max_size=12).map("".join))
@example(name="\u202eevil.example")
@example(name="Bob\udfff")
def test_patch_me_stores_a_clean_name_or_refuses_it_and_changes_nothing(env: Env, name: str) -> None:
    _SEEN.append(name)  # a fresh user per example (a re-seeded user would restart its audit sequence)
    user = env.user(env.add_user(f"fuzz{len(_SEEN)}@acme.example", memberships={"acme": ["Buyer"]}).id)
    assert user is not None
    r = env.call(UPDATE, "PATCH", "/me", as_user=user, body={"firstName": name})
    expected = _expected(name)
    if expected is None:
        assert r.status == 422, r
        assert [e["field"] for e in r.json()["errors"]] == ["firstName"]
        assert env.user(user.id) == user
    else:
        assert r.status == 200, r
        r.text.encode("utf-8")  # the answer is valid UTF-8
        after = env.user(user.id)
        assert isinstance(after, User) and after.first_name == expected
