"""list-users: the users list and the accounts (GET /users, GET /accounts/{accountId}/users,
GET /accounts, GET /accounts/{accountId})."""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.logging import correlation_paths

from usermgmt import container
from usermgmt.api import json_response, make_resolver, request_ctx
from usermgmt.errors import AccountNotFound
from usermgmt.observability import count, lambda_entry

app = make_resolver()
MAX_ACCOUNT_ID = 200


def _params() -> dict[str, str]:
    return dict(app.current_event.query_string_parameters or {})


def _account_id(raw: str) -> str:
    account_id = unquote(raw) if "%" in raw else raw
    if not account_id or len(account_id) > MAX_ACCOUNT_ID:
        raise AccountNotFound()
    return account_id


@app.get("/users")
def list_users() -> Response[str]:
    page = container.get().lists.list_users(request_ctx(app), _params())
    count("UsersListed")
    return json_response(200, page)


@app.get("/accounts/<accountId>/users")
def list_account_users(accountId: str) -> Response[str]:
    page = container.get().lists.list_users(request_ctx(app), _params(), _account_id(accountId))
    count("UsersListed")
    return json_response(200, page)


@app.get("/accounts")
def list_accounts() -> Response[str]:
    return json_response(200, container.get().lists.list_accounts(request_ctx(app), _params()))


@app.get("/accounts/<accountId>")
def get_account(accountId: str) -> Response[str]:
    return json_response(200, container.get().lists.get_account(request_ctx(app), _account_id(accountId)))


@lambda_entry(correlation_paths.API_GATEWAY_HTTP)
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return app.resolve(event, context)
