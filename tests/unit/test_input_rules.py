"""Names and emails refuse what would hide, reorder or break text (security notes L6, L7, T10).

The fuzz draws from every Unicode category, lone surrogates included, so it can produce the characters
the rules must refuse (format and bidi controls, private use, unassigned, surrogates) and checks what a
client sees: a 422 naming the field and an unchanged record, or the name stored as sent. Emails (an
email change, a creation) are built from parts, valid or with one RFC 5321 violation or one character
no address may hold, and each request is either a 4xx problem that changed nothing (table, mail,
Auth0) or stored exactly.
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


# ------------------------------------------------------------------------------ emails and creation (T11)
# Emails are built from parts, so whether one is valid is known by construction: a valid one is a
# dot-string of atoms @ LDH labels; a broken one has one RFC 5321 violation or one character no
# address may hold (anything outside ASCII, invisible, bidi, private use, unassigned, a surrogate).
ATEXT = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+/=?^_`{|}~-"
ATOM = st.text(alphabet=ATEXT, min_size=1, max_size=8)
LABEL = st.from_regex(r"\A[a-z0-9](?:[a-z0-9-]{0,8}[a-z0-9])?\Z")
LOCAL = st.lists(ATOM, min_size=1, max_size=3).map(".".join)
DOMAIN = st.lists(LABEL, min_size=2, max_size=3).map(".".join)
VALID_EMAIL = st.builds(lambda local, domain: f"{local}@{domain}", LOCAL, DOMAIN)
NOT_IN_AN_ADDRESS = st.one_of(
    NASTY,
    st.characters(codec=None, min_codepoint=0x80, exclude_categories=()),  # non-ASCII, surrogates too
    st.sampled_from(list(' "(),:;<>[\\]@\x00\x7f')),
)


@st.composite
def broken_email(draw: st.DrawFn) -> str:
    local, domain = draw(LOCAL), draw(DOMAIN)
    kind = draw(st.sampled_from(["char", "dots", "local-64", "label-63", "hyphen", "single-label", "total"]))
    if kind == "char":  # inside, never at an end (surrounding whitespace is trimmed, as it should be)
        email = f"{local}@{domain}"
        at = draw(st.integers(1, len(email) - 1))
        return email[:at] + draw(NOT_IN_AN_ADDRESS) + email[at:]
    if kind == "dots":
        broken = draw(st.sampled_from([f".{local}", f"{local}.", local.replace(".", "..") + "..x"]))
        return f"{broken}@{domain}"
    if kind == "local-64":
        return f"{'a' * 65}@{domain}"
    if kind == "label-63":
        return f"{local}@{'b' * 64}.{domain}"
    if kind == "hyphen":
        return f"{local}@{draw(st.sampled_from(['-x', 'x-']))}.{domain}"
    if kind == "single-label":
        return f"{local}@{draw(LABEL)}"
    return f"{local}@{'.'.join(['c' * 60] * 5)}.{domain}"  # over 254 octets in all


def _unchanged(env: Env, before: dict[str, object], mails: int, idp_calls: int) -> None:
    assert env.store.snapshot() == before
    assert len(env.mailer.sent) == mails and len(env.idp.calls) == idp_calls


def _refused(r: object, fields: set[str]) -> None:
    assert 400 <= r.status < 500, r  # type: ignore[attr-defined]
    assert r.headers["content-type"] == "application/problem+json", r  # type: ignore[attr-defined]
    problem = r.json()  # type: ignore[attr-defined]
    assert problem["status"] == r.status and problem["code"]  # type: ignore[attr-defined]
    assert {e["field"] for e in problem.get("errors", [])} == fields, problem


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(email=st.one_of(VALID_EMAIL.map(lambda e: (e, True)), broken_email().map(lambda e: (e, False))))
@example(email=("bob\u202e@x.example", False))
@example(email=("B.O.B+Tag@Sub.X.example", True))
def test_an_email_change_stores_a_valid_address_exactly_or_refuses_it_and_changes_nothing(
    env: Env, email: tuple[str, bool]
) -> None:
    address, valid = email
    _SEEN.append(address)
    user = env.add_user(f"fuzz{len(_SEEN)}@acme.example", memberships={"acme": ["Buyer"]})
    before, mails, calls = env.store.snapshot(), len(env.mailer.sent), len(env.idp.calls)

    r = env.call(UPDATE, "PATCH", "/me", as_user=user, body={"email": address})

    if not valid:
        _refused(r, {"email"})
        _unchanged(env, before, mails, calls)
        return
    assert r.status == 200, r
    after = env.user(user.id)
    assert after is not None and after.pending_email == address.lower() == r.json()["pendingEmail"]
    assert env.mailer.to(address.lower()), "the verification link went to the address as stored"


NAME = st.lists(st.one_of(ANY_CHAR, NASTY), min_size=1, max_size=12).map("".join)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    first=st.one_of(NAME, st.sampled_from(["Zoë", "José María", "山田"])),
    last=st.one_of(NAME, st.sampled_from(["O'Brien-Smith", "Nguyễn"])),
    email=st.one_of(VALID_EMAIL.map(lambda e: (e, True)), broken_email().map(lambda e: (e, False))),
)
@example(first="Bob\u200b", last="Ok", email=("ok@x.example", True))
@example(first="Bob", last="\ud800", email=("ok@x.example", True))
def test_a_creation_stores_clean_names_and_a_valid_address_exactly_or_refuses_and_changes_nothing(
    env: Env, first: str, last: str, email: tuple[str, bool]
) -> None:
    _SEEN.append(first)
    admin = env.add_user(f"admin{len(_SEEN)}@acme.example", profile="administrator")
    address, valid = email
    address = f"n{len(_SEEN)}.{address}" if valid else address  # a new address for every example
    before, mails, calls = env.store.snapshot(), len(env.mailer.sent), len(env.idp.calls)

    r = env.call(
        "create-user",
        "POST",
        "/users",
        as_user=admin,
        body={"email": address, "firstName": first, "lastName": last},
    )

    refused = {f for f, ok in (("firstName", _expected(first)), ("lastName", _expected(last))) if ok is None}
    if not valid:
        refused.add("email")
    if refused:
        _refused(r, refused)
        _unchanged(env, before, mails, calls)
        return
    assert r.status == 201, r
    created = env.user(r.json()["id"])
    assert created is not None
    assert (created.email, created.first_name, created.last_name) == (
        address.lower(),
        _expected(first),
        _expected(last),
    )
