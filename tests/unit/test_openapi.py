"""docs/openapi.json: generated from template.yaml and the package's models, valid OpenAPI 3.1, current.

When one of these fails after a change of a route, a model or a problem code: run `make openapi` and
commit docs/openapi.json (and describe a new route in local/openapi.py's OPERATIONS).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from openapi_spec_validator import OpenAPIV31SpecValidator

from local import openapi
from usermgmt.errors import ApiError, FieldProblem, LinkGone, RateLimited, UserNotFound, ValidationFailed
from usermgmt.models import Membership, User, user_view
from usermgmt.schemas import Problem, UserResource

METHODS = {"get", "put", "post", "patch", "delete", "head", "options", "trace"}


@pytest.fixture(scope="module")
def committed() -> dict[str, Any]:
    return dict(json.loads(openapi.DOCUMENT.read_text(encoding="utf-8")))


def operations(document: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (method.upper(), path): op
        for path, item in document["paths"].items()
        for method, op in item.items()
        if method in METHODS
    }


def test_the_committed_document_is_what_the_generator_produces(committed: dict[str, Any]) -> None:
    assert openapi.render(committed) == openapi.render(openapi.build()), (
        "docs/openapi.json is stale: run `make openapi` and commit it"
    )
    assert openapi.DOCUMENT.read_text(encoding="utf-8") == openapi.render(openapi.build())


def test_the_document_is_valid_openapi_3_1(committed: dict[str, Any]) -> None:
    assert committed["openapi"].startswith("3.1")
    errors = [e.message for e in OpenAPIV31SpecValidator(committed).iter_errors()]
    assert errors == []


def test_every_template_route_is_in_the_document_and_nothing_else(committed: dict[str, Any]) -> None:
    in_template = {(r.method, r.path) for r in openapi.template_routes()}
    in_document = set(operations(committed))
    assert in_template - in_document == set(), "routes of template.yaml missing from the document"
    assert in_document - in_template == set(), "operations in the document that template.yaml lacks"
    assert set(openapi.OPERATIONS) == in_template, "OPERATIONS describes routes template.yaml lacks"


def test_a_route_added_to_the_template_without_a_description_fails_the_generator(tmp_path: Any) -> None:
    template = openapi.TEMPLATE.read_text(encoding="utf-8").replace(
        "            Path: /me\n",
        "            Path: /me\n        Extra:\n          Type: HttpApi\n          Properties:\n"
        "            ApiId: !Ref UsersApi\n            Method: GET\n            Path: /me/extra\n",
        1,
    )
    path = tmp_path / "template.yaml"
    path.write_text(template, encoding="utf-8")
    with pytest.raises(KeyError, match="GET /me/extra"):
        openapi.build(path)


def test_security_follows_the_template(committed: dict[str, Any]) -> None:
    ops = operations(committed)
    scheme = committed["components"]["securitySchemes"][openapi.SECURITY_SCHEME]
    assert scheme == {**scheme, "type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
    for route in openapi.template_routes():
        op = ops[(route.method, route.path)]
        if route.public:
            assert op["security"] == [], route
            assert "401" not in op["responses"], route
        else:
            assert op["security"] == [{openapi.SECURITY_SCHEME: []}], route
            content = op["responses"]["401"]["content"]
            # API Gateway's own answer when the authorizer refuses, and the handlers' problem+json
            assert content["application/json"]["schema"] == {
                "$ref": "#/components/schemas/GatewayUnauthorized"
            }
            assert "application/problem+json" in content


def test_every_problem_code_is_documented_with_its_status(committed: dict[str, Any]) -> None:
    ops = operations(committed)
    statuses = openapi.problem_statuses()
    for (method, path), description in openapi.OPERATIONS.items():
        responses = ops[(method, path)]["responses"]
        for code in description.codes:
            response = responses[str(statuses[code])]
            schema = response["content"]["application/problem+json"]["schema"]
            assert code in schema["allOf"][1]["properties"]["code"]["enum"], (method, path, code)
            if statuses[code] in (429, 503):
                assert "Retry-After" in response["headers"]
    user_routes = [op for (m, p), op in ops.items() if "{userId}" in p]
    assert all("user_not_found" in json.dumps(op["responses"].get("404")) for op in user_routes)


def test_link_pages_describe_html_and_json(committed: dict[str, Any]) -> None:
    ops = operations(committed)
    for path in ("/password-reset/{token}", "/email-verification/{token}", "/email-change/{token}/cancel"):
        for method in ("GET", "POST"):
            responses = ops[(method, path)]["responses"]
            assert set(responses["200"]["content"]) == {"application/json", "text/html"}, (method, path)
            assert set(responses["410"]["content"]) == {"application/problem+json", "text/html"}


def test_etag_and_links_for_the_stateful_walk(committed: dict[str, Any]) -> None:
    ops = operations(committed)
    for key in [
        ("GET", "/users/{userId}"),
        ("PATCH", "/users/{userId}"),
        ("POST", "/users/{userId}/suspend"),
    ]:
        ok = ops[key]["responses"]["200"]
        assert "ETag" in ok["headers"], key
        assert ok["links"]["GetUser"] == {
            "operationId": "getUser",
            "parameters": {"userId": "$response.body#/id"},
        }
    deleted = ops[("DELETE", "/users/{userId}")]["responses"]["204"]["links"]["GetUser"]
    assert deleted["parameters"] == {"userId": "$request.path.userId"}


# ----------------------------------------------------------------- the models say what handlers send
def test_the_user_resource_model_is_what_user_view_renders() -> None:
    user = User(
        id="auth0|abc",
        email="a@b.example",
        first_name="A",
        last_name="B",
        memberships=(Membership("acme", ("Administrator", "Buyer")), Membership("globex", ("Buyer",))),
        default_account_id="globex",
        created_at="2026-01-01T00:00:00.000Z",
        updated_at="2026-01-01T00:00:00.000Z",
    )
    full = user_view(user)
    assert UserResource.model_validate(full).model_dump() == full
    delegated = user_view(user, frozenset({"acme"}))
    assert UserResource.model_validate(delegated).model_dump() == delegated


@pytest.mark.parametrize(
    "error",
    [
        UserNotFound(),
        ValidationFailed(errors=[FieldProblem("x", "is wrong")]),
        RateLimited(5),
        LinkGone("link_expired", "This link has expired", can_renew=True),
        ApiError("An unexpected error occurred"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_problem_details_fit_the_problem_model(error: ApiError) -> None:
    body = error.problem()
    assert Problem.model_validate(body).model_dump(exclude_unset=True) == body
