"""The list's backfill on the in-memory store (the DynamoDB table is in tests/integration)."""

from __future__ import annotations

from tests.conftest import Env, add_cast


def test_the_backfill_restores_membership_entries_and_counts(memory_env: Env) -> None:
    env = memory_env
    people = add_cast(env)
    admin, gus = people["admin"], people["gus"]
    store = env.store
    wanted = {
        account_id: [
            i["id"]
            for i in env.call("list-users", "GET", f"/accounts/{account_id}/users", as_user=admin).json()[
                "items"
            ]
        ]
        for account_id in ("acme", "globex")
    }
    counts = {
        a: env.call("list-users", "GET", f"/accounts/{a}", as_user=admin).json()["counts"] for a in wanted
    }
    store.members.clear()  # as before the list; plus an entry of an account gus is not in
    store.members["acme"] = {gus.id: store.get_user(gus.id)}
    store.account_counts.clear()

    summary = env.container.lists.backfill(2)
    assert (summary["usersWritten"], summary["staleEntriesRemoved"]) == (len(people), 1)
    for account_id, ids in wanted.items():
        listed = env.call("list-users", "GET", f"/accounts/{account_id}/users", as_user=admin).json()["items"]
        assert [i["id"] for i in listed] == ids
        assert (
            env.call("list-users", "GET", f"/accounts/{account_id}", as_user=admin).json()["counts"]
            == counts[account_id]
        )
    again = env.container.lists.backfill(3)
    assert (again["usersWritten"], again["staleEntriesRemoved"], again["accountsRecounted"]) == (0, 0, {})
