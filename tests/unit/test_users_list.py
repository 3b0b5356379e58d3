"""The users list (SPEC section 12) over random accounts, memberships, roles, callers and queries.

Properties, checked through the handlers as a client sees them: every item is inside the caller's
scope and equal to what ``GET /users/{userId}`` answers that caller; walking every page yields each
visible user matching the filters exactly once (in order), and with edits between pages each user
not edited meanwhile still exactly once and an edited one at most once; the counts of every account
match the records; bad filters and cursors are 400 and change nothing. Run on the in-memory store and
(fewer examples) on DynamoDB in moto, where the same walk reads the GSIs of template.yaml.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import TABLE, Env, create_table, wired_env
from usermgmt.models import ROLES, User

ACCOUNTS = ("acme", "globex", "initech")
FIRST = ("Al", "alma", "Bo", "Bea", "Cy", "Él", "Zoe")
LAST = ("Ames", "Bell", "bo", "Cole", "Ames-Li", "Zu")
STATUSES = ("ACTIVE", "SUSPENDED", "INVITED")
PROFILES = ("customer", "partner", "administrator")


@contextmanager
def _env(kind: str) -> Iterator[Env]:
    if kind == "memory":
        from usermgmt.adapters.memory import MemoryStore

        with wired_env(MemoryStore(), None) as e:
            yield e
        return
    from moto import mock_aws

    with mock_aws():
        import boto3

        from usermgmt.adapters.dynamo import DynamoStore

        client = boto3.client("dynamodb", region_name="eu-central-1")
        create_table(client, TABLE)
        with wired_env(DynamoStore(client, TABLE), client) as e:
            yield e


person = st.fixed_dictionaries(
    {
        "first": st.sampled_from(FIRST),
        "last": st.sampled_from(LAST),
        "profile": st.sampled_from(PROFILES),
        "status": st.sampled_from(STATUSES),
        "verified": st.booleans(),
        "memberships": st.dictionaries(
            st.sampled_from(ACCOUNTS),
            st.lists(st.sampled_from(ROLES), min_size=1, max_size=2, unique=True),
            max_size=3,
        ),
    }
)

query = st.fixed_dictionaries(
    {},
    optional={
        "status": st.lists(st.sampled_from(STATUSES), min_size=1, max_size=2, unique=True).map(",".join),
        "profile": st.sampled_from(PROFILES),
        "emailPrefix": st.sampled_from(("u", "U1", "u2", "x")),
        "namePrefix": st.sampled_from(("a", "B", "bo", "é", "z", "q")),
        "emailVerified": st.sampled_from(("true", "false")),
        "sort": st.sampled_from(("email", "lastName", "-createdAt", "-updatedAt")),
        "updatedSince": st.sampled_from(("2026-01-01T00:00:00Z", "2030-01-01T00:00:00+01:00")),
        "idpSync": st.just("pending"),
    },
)


def _seed(env: Env, people: list[dict[str, Any]]) -> list[User]:
    env.add_account("initech", "Initech")
    users = []
    for i, p in enumerate(people):
        user = env.add_user(
            f"u{i}@{p['last'].lower()}.example",
            first=p["first"],
            last=p["last"],
            profile=p["profile"],
            memberships=p["memberships"],
            status=p["status"],
        )
        user = user.evolve(
            email_verified=p["verified"],
            created_at=f"2026-01-01T00:00:{i:02d}.000Z",
            updated_at=f"2026-01-0{1 + i % 3}T00:00:00.000Z",
        )
        env.store.put_user(user)
        users.append(user)
    return users


def _visible(caller: User, user: User, account: str | None) -> bool:
    if account is not None and account not in user.account_ids:
        return False
    if caller.is_platform_admin:
        return True
    return not user.is_platform_admin and bool(user.account_ids & caller.administered_accounts())


def _matches(user: User, q: dict[str, str]) -> bool:
    from datetime import datetime

    names = (user.first_name.lower(), user.last_name.lower())
    return all(
        (
            "status" not in q or user.status in q["status"].split(","),
            "profile" not in q or user.profile == q["profile"],
            "emailPrefix" not in q or user.email.startswith(q["emailPrefix"].lower()),
            "namePrefix" not in q or any(n.startswith(q["namePrefix"].lower()) for n in names),
            "emailVerified" not in q or str(user.email_verified).lower() == q["emailVerified"],
            "idpSync" not in q or user.idp_sync == q["idpSync"],
            "updatedSince" not in q
            or datetime.fromisoformat(user.updated_at) >= datetime.fromisoformat(q["updatedSince"]),
            "role" not in q
            or q["role"] in next(m.roles for m in user.memberships if m.account_id == q["accountId"]),
        )
    )


def _sort_key(item: dict[str, Any], q: dict[str, str]) -> Any:
    sort = q.get("sort", "email")
    if sort == "email":
        return (item["email"], item["id"])
    if sort == "lastName":
        return (item["lastName"].lower(), item["firstName"].lower(), item["id"])
    if sort == "-createdAt":
        return tuple(-ord(c) for c in item["createdAt"] + item["id"])
    return tuple(-ord(c) for c in item["updatedAt"] + item["id"])


def _walk(
    env: Env, caller: User, path: str, q: dict[str, str], limit: int, between: Any = None
) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    cursor = None
    for page_no in range(200):
        params = {**q, "limit": str(limit), **({"cursor": cursor} if cursor else {})}
        r = env.call("list-users", "GET", path, as_user=caller, query=params)
        assert r.status == 200, r
        body = r.json()
        assert len(body["items"]) <= limit
        for item in body["items"]:
            got = env.call("update-user", "GET", f"/users/{item['id']}", as_user=caller)
            assert got.status == 200, "an item the caller may not read"
            assert item == got.json(), "an item differs from what GET shows this caller"
        seen += body["items"]
        cursor = body["nextCursor"]
        if cursor is None:
            return seen
        if between:
            between(page_no)
    raise AssertionError("the walk did not end")


def _callers(env: Env, users: list[User]) -> list[User]:
    admin = env.add_user("root@example.com", first="Root", last="Admin", profile="administrator")
    delegated = [
        u for u in users if u.status == "ACTIVE" and not u.is_platform_admin and u.administered_accounts()
    ]
    return [admin, *delegated[:2]]


def _check_list(env: Env, users: list[User], q: dict[str, str], limit: int, account: str | None) -> None:
    for caller in _callers(env, users):
        fresh = {u.id: env.store.get_user(u.id) for u in users}
        everyone = {uid: u for uid, u in fresh.items() if u is not None}
        path = "/users"
        query = dict(q)
        if account is not None:
            path = f"/accounts/{account}/users"
        if (
            not caller.is_platform_admin
            and account is not None
            and account not in caller.administered_accounts()
        ):
            r = env.call("list-users", "GET", path, as_user=caller, query=query)
            assert (r.status, r.json()["code"]) == (404, "account_not_found")
            continue
        items = _walk(env, caller, path, query, limit)
        ids = [i["id"] for i in items]
        assert len(ids) == len(set(ids)), "a user was listed twice"
        q_model = {**query, **({"accountId": account} if account else {})}
        expected = {
            uid for uid, u in everyone.items() if _visible(caller, u, account) and _matches(u, q_model)
        }
        expected |= {caller.id} if _visible(caller, caller, account) and _matches(caller, q_model) else set()
        assert set(ids) == expected
        if "namePrefix" not in query or "sort" in query:
            assert [_sort_key(i, query) for i in items] == sorted(_sort_key(i, query) for i in items)


@pytest.mark.parametrize("kind", ["memory", "dynamo"])
def test_every_page_is_in_scope_and_a_walk_lists_each_match_once(kind: str) -> None:
    @settings(
        max_examples=40 if kind == "memory" else 8,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(
        people=st.lists(person, min_size=1, max_size=9),
        q=query,
        limit=st.integers(1, 4),
        account=st.sampled_from((None, *ACCOUNTS)),
        role=st.sampled_from((None, *ROLES)),
    )
    def check(
        people: list[dict[str, Any]], q: dict[str, str], limit: int, account: str | None, role: str | None
    ) -> None:
        if role and account:
            q = {**q, "role": role}
        with _env(kind) as env:
            users = _seed(env, people)
            _check_list(env, users, q, limit, account)

    check()


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    people=st.lists(person, min_size=2, max_size=9),
    sort=st.sampled_from(("email", "lastName", "-createdAt", "-updatedAt")),
    edits=st.lists(
        st.tuples(st.integers(0, 8), st.sampled_from(("rename", "suspend", "enable", "move"))), max_size=6
    ),
    delegated=st.booleans(),
)
def test_a_walk_with_edits_between_pages_lists_each_unedited_user_once(
    people: list[dict[str, Any]], sort: str, edits: list[tuple[int, str]], delegated: bool
) -> None:
    with _env("memory") as env:
        users = _seed(env, people)
        admin, *others = _callers(env, users)
        caller = others[0] if delegated and others else admin
        edited: set[str] = set()

        def between(page_no: int) -> None:
            if page_no >= len(edits):
                return
            index, action = edits[page_no]
            target = users[index % len(users)]
            if target.id == caller.id:
                return  # the caller stays as it is (a suspended caller is refused)
            env.clock.advance(1)
            path = f"/users/{target.id}"
            if action == "rename":
                r = env.call("update-user", "PATCH", path, as_user=admin, body={"lastName": "Aardvark"})
            elif action == "move":
                r = env.call(
                    "update-user", "PATCH", path, as_user=admin, body={"firstName": "Zed", "lastName": "Zz"}
                )
            else:
                fn = "suspend-user" if action == "suspend" else "enable-user"
                r = env.call(fn, "POST", f"{path}/{action}", as_user=admin)
            if r.status == 200:
                edited.add(target.id)

        before = {u.id for u in users if _visible(caller, env.store.get_user(u.id), None)}
        before |= {caller.id} if _visible(caller, caller, None) else set()
        items = _walk(env, caller, "/users", {"sort": sort}, 2, between)
        ids = [i["id"] for i in items]
        assert len(ids) == len(set(ids)), "a user was listed twice"
        after = {u.id for u in users if _visible(caller, env.store.get_user(u.id), None)}
        assert (before & after) - edited <= set(ids), "a user not edited during the walk was missed"
        assert set(ids) <= before | after
        _check_counts(env, [*users, admin])


def _check_counts(env: Env, users: list[User]) -> None:
    admin = env.store.get_user(next(u.id for u in users if u.email == "root@example.com"))
    for account in ACCOUNTS:
        records = [env.store.get_user(u.id) for u in users]
        expected = {s: 0 for s in STATUSES}
        for u in records:
            if u is not None and account in u.account_ids:
                expected[u.status] += 1
        r = env.call("list-users", "GET", f"/accounts/{account}", as_user=admin)
        assert r.status == 200
        assert r.json()["counts"] == expected


@pytest.mark.parametrize("kind", ["memory", "dynamo"])
def test_counts_move_with_every_change_and_the_recount_agrees(kind: str) -> None:
    with _env(kind) as env:
        env.add_account("initech", "Initech")
        admin = env.add_user("root@example.com", first="Root", last="Admin", profile="administrator")
        dana = env.add_user(
            "dana@acme.example", first="Dana", last="D", memberships={"acme": ["Administrator"]}
        )
        bob = env.add_user(
            "bob@acme.example", first="Bob", last="B", memberships={"acme": ["Buyer"], "globex": ["Buyer"]}
        )
        ida = env.add_user(
            "ida@acme.example",
            first="Ida",
            last="I",
            profile="administrator",
            memberships={"acme": ["Buyer"]},
        )
        users = [admin, dana, bob, ida]
        counts = lambda who, a: env.call("list-users", "GET", f"/accounts/{a}", as_user=who).json()["counts"]  # noqa: E731
        assert counts(admin, "acme") == {"INVITED": 0, "ACTIVE": 3, "SUSPENDED": 0}
        assert counts(dana, "acme") == {"INVITED": 0, "ACTIVE": 2, "SUSPENDED": 0}  # ida is not hers to see
        assert env.call("suspend-user", "POST", f"/users/{bob.id}/suspend", as_user=admin).status == 200
        _check_counts(env, users)
        body = {"memberships": [{"accountId": "globex", "roles": ["Buyer"]}], "defaultAccountId": "globex"}
        assert env.call("update-user", "PATCH", f"/users/{bob.id}", as_user=admin, body=body).status == 200
        _check_counts(env, users)
        dana_list = env.call("list-users", "GET", "/users", as_user=dana).json()["items"]
        assert [i["email"] for i in dana_list] == ["dana@acme.example"]  # bob left acme: gone at once
        assert env.call("delete-user", "DELETE", f"/users/{bob.id}", as_user=admin).status in (202, 204)
        _check_counts(env, users)
        assert env.container.lists.recount("globex") == {"INVITED": 0, "ACTIVE": 0, "SUSPENDED": 0}
        assert env.container.lists.recount("acme")["ACTIVE"] == 2  # dana and ida
        _check_counts(env, users)


BAD_FILTERS = [
    {"unknown": "1"},
    {"status": "active"},
    {"status": "ACTIVE,"},
    {"role": "Buyer"},
    {"profile": "root"},
    {"limit": "0"},
    {"limit": "201"},
    {"limit": "ten"},
    {"sort": "createdAt"},
    {"emailVerified": "yes"},
    {"idpSync": "synced"},
    {"deliverability": "ok"},
    {"updatedSince": "yesterday"},
    {"updatedSince": "2026-01-01T00:00:00"},
    {"emailPrefix": ""},
]


@pytest.mark.parametrize("params", BAD_FILTERS, ids=lambda p: "&".join(f"{k}={v}" for k, v in p.items()))
def test_a_bad_filter_is_400_invalid_filter(memory_env: Env, params: dict[str, str]) -> None:
    admin = memory_env.add_user("root@example.com", first="Root", last="Admin", profile="administrator")
    before = memory_env.store.snapshot()
    r = memory_env.call("list-users", "GET", "/users", as_user=admin, query=params)
    assert (r.status, r.json()["code"]) == (400, "invalid_filter")
    assert memory_env.store.snapshot() == before


def test_bad_cursors_are_400_invalid_cursor_and_change_nothing(memory_env: Env) -> None:
    env = memory_env
    admin = env.add_user("root@example.com", first="Root", last="Admin", profile="administrator")
    other = env.add_user("ops@example.com", first="Op", last="S", profile="administrator")
    for i in range(5):
        env.add_user(f"u{i}@example.com", memberships={"acme": ["Buyer"]})
    first = env.call("list-users", "GET", "/users", as_user=admin, query={"limit": "2"}).json()
    cursor = first["nextCursor"]
    assert cursor
    flipped = cursor[:10] + ("A" if cursor[10] != "A" else "B") + cursor[11:]
    before = env.store.snapshot()
    cases = [
        (admin, {"cursor": flipped}),  # tampered
        (admin, {"cursor": cursor + "AA"}),
        (admin, {"cursor": "not a cursor"}),
        (other, {"cursor": cursor}),  # another caller's
        (admin, {"cursor": cursor, "sort": "lastName"}),  # another query's
        (admin, {"cursor": cursor, "status": "ACTIVE"}),
    ]
    for who, params in cases:
        r = env.call("list-users", "GET", "/users", as_user=who, query={"limit": "2", **params})
        assert (r.status, r.json()["code"]) == (400, "invalid_cursor"), params
    r = env.call("list-users", "GET", "/accounts/acme/users", as_user=admin, query={"cursor": cursor})
    assert (r.status, r.json()["code"]) == (400, "invalid_cursor")  # another route's
    ok = env.call("list-users", "GET", "/users", as_user=admin, query={"limit": "2", "cursor": cursor})
    assert ok.status == 200
    env.clock.advance(3601)
    r = env.call("list-users", "GET", "/users", as_user=admin, query={"limit": "2", "cursor": cursor})
    assert (r.status, r.json()["code"]) == (400, "invalid_cursor")  # expired
    assert env.store.snapshot() == before


def test_a_change_shows_in_the_next_list_call(memory_env: Env) -> None:
    env = memory_env
    admin = env.add_user("root@example.com", first="Root", last="Admin", profile="administrator")
    bob = env.add_user("bob@acme.example", first="Bob", last="B", memberships={"acme": ["Buyer"]})
    assert env.call("suspend-user", "POST", f"/users/{bob.id}/suspend", as_user=admin).status == 200
    suspended = env.call(
        "list-users", "GET", "/accounts/acme/users", as_user=admin, query={"status": "SUSPENDED"}
    )
    assert [i["id"] for i in suspended.json()["items"]] == [bob.id]
    assert suspended.json()["items"][0]["status"] == "SUSPENDED"


def test_who_may_list(memory_env: Env) -> None:
    env = memory_env
    bob = env.add_user("bob@acme.example", first="Bob", last="B", memberships={"acme": ["Buyer"]})
    dana = env.add_user("dana@acme.example", first="Dana", last="D", memberships={"acme": ["Administrator"]})
    assert env.call("list-users", "GET", "/users", as_user=bob).json()["code"] == "forbidden"
    assert env.call("list-users", "GET", "/accounts", as_user=bob).json()["code"] == "forbidden"
    for path in ("/accounts/acme/users", "/accounts/acme", "/accounts/globex", "/accounts/nowhere/users"):
        assert env.call("list-users", "GET", path, as_user=bob).json()["code"] == "account_not_found"
    for path in ("/accounts/globex/users", "/accounts/globex"):
        assert env.call("list-users", "GET", path, as_user=dana).json()["code"] == "account_not_found"
    r = env.call("list-users", "GET", "/users", as_user=dana, query={"accountId": "globex"})
    assert r.json()["code"] == "account_not_found"
    accounts = env.call("list-users", "GET", "/accounts", as_user=dana).json()
    assert accounts == {
        "items": [{"id": "acme", "name": "Acme Corp", "counts": {"INVITED": 0, "ACTIVE": 2, "SUSPENDED": 0}}],
        "nextCursor": None,
    }


def test_the_recount_command_repairs_an_account(memory_env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    from scripts.recount import main

    env = memory_env
    admin = env.add_user("root@example.com", first="Root", last="Admin", profile="administrator")
    env.add_user("bob@acme.example", memberships={"acme": ["Buyer"]}, status="SUSPENDED")
    env.store.account_counts["acme"] = {"ACTIVE": 41}  # as after a restore or a manual edit
    assert main(["acme"]) == 0
    assert '"SUSPENDED": 1' in capsys.readouterr().out
    counts = env.call("list-users", "GET", "/accounts/acme", as_user=admin).json()["counts"]
    assert counts == {"INVITED": 0, "ACTIVE": 0, "SUSPENDED": 1}
    assert main(["nowhere"]) == 1


def test_a_filter_the_index_cannot_answer_reads_under_a_budget(
    memory_env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    from usermgmt.service import lists

    monkeypatch.setattr(lists, "READ_BUDGET", 10)
    monkeypatch.setattr(lists, "FILTERED_CHUNK", 4)
    env = memory_env
    admin = env.add_user("root@example.com", first="Root", last="Admin", profile="administrator")
    for i in range(25):
        env.add_user(f"u{i:02d}@example.com", profile="partner" if i in (3, 24) else "customer")
    first = env.call("list-users", "GET", "/users", as_user=admin, query={"profile": "partner", "limit": "5"})
    body = first.json()
    assert [i["email"] for i in body["items"]] == ["u03@example.com"]  # a short page ...
    assert body["nextCursor"] is not None  # ... that says there is more to read
    items = _walk(env, admin, "/users", {"profile": "partner"}, 5)
    assert [i["email"] for i in items] == ["u03@example.com", "u24@example.com"]
