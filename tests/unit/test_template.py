"""template.yaml, read the way the local stack and the deploy read it.

cfn-lint misses a mistyped ``!Ref`` inside an ``AWS::Serverless::Function``, and a handler that does not
import only fails after deploy: these tests catch both, and the public/authorized split of the routes.
"""

from __future__ import annotations

import copy
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from local.lambda_runtime import load_handler_module
from local.template import (
    Stack,
    TemplateError,
    load_stack,
    load_template,
    merge_globals,
    references,
    unknown_references,
)

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "template.yaml"

# SPEC section 3: every other route requires a valid token.
PUBLIC_ROUTES = frozenset(
    {
        ("POST", "/password-reset"),
        ("GET", "/password-reset/{token}"),
        ("POST", "/password-reset/{token}"),
        ("POST", "/password-reset/{token}/renew"),
        ("GET", "/email-verification/{token}"),
        ("POST", "/email-verification/{token}"),
        ("POST", "/email-verification/{token}/renew"),  # the expired page's "send a new link" (SPEC 6)
        ("GET", "/email-change/{token}/cancel"),
        ("POST", "/email-change/{token}/cancel"),
        ("GET", "/invitations/{invitation}"),  # SPEC 13: the invitation link
        ("POST", "/invitations/{invitation}"),
        ("POST", "/invitations/{invitation}/renew"),
    }
)

# Values for the parameters without a default (what samconfig.toml / the local runner give).
PARAMETERS = {
    "Auth0Domain": "tenant.eu.auth0.com",
    "ApiAudience": "https://api.users.example.com",
    "Auth0ClientId": "m2m-client",
    "Auth0ClientSecretArn": "arn:aws:secretsmanager:eu-central-1:123456789012:secret:auth0-AbCdEf",
    "SenderIdentity": "example.com",
    "SenderEmail": "no-reply@example.com",
    "SesConfigurationSet": "usermgmt",
    "PublicBaseUrl": "https://users.example.com",
    "CorsAllowedOrigins": "https://admin.example.com,https://shop.example.com",
}


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    return load_template(TEMPLATE)


@pytest.fixture(scope="module")
def stack(raw: dict[str, Any]) -> Stack:
    declared = raw.get("Parameters") or {}
    return load_stack(TEMPLATE, parameters={k: v for k, v in PARAMETERS.items() if k in declared})


# ------------------------------------------------------------------------------------------------ references


def test_every_ref_getatt_and_sub_target_exists(raw: dict[str, Any]) -> None:
    assert unknown_references(raw) == []


def test_the_reference_check_sees_inside_serverless_functions(raw: dict[str, Any]) -> None:
    # Given the template with one mistyped Ref / GetAtt / Sub each inside a function's environment
    broken = copy.deepcopy(raw)
    function = next(r for r in broken["Resources"].values() if r["Type"] == "AWS::Serverless::Function")
    variables = function["Properties"].setdefault("Environment", {}).setdefault("Variables", {})
    variables["BROKEN_REF"] = {"Ref": "UsersTabel"}
    variables["BROKEN_GETATT"] = {"Fn::GetAtt": ["UsersTabel", "Arn"]}
    variables["BROKEN_SUB"] = {"Fn::Sub": "https://${Auth0Domian}/"}
    # When it is checked, Then each one is named
    problems = "\n".join(unknown_references(broken))
    assert "'UsersTabel'" in problems
    assert "'UsersTabel.Arn'" in problems
    assert "'Auth0Domian'" in problems


def test_references_are_found_in_globals_too(raw: dict[str, Any]) -> None:
    found = {r.target for r in references(raw)}
    assert "UsersTable" in found  # Globals.Function.Environment TABLE_NAME: !Ref UsersTable


# ------------------------------------------------------------------------------------------------ handlers


def test_every_function_has_a_local_code_uri_and_handler_file(stack: Stack) -> None:
    assert stack.functions, "the template declares no AWS::Serverless::Function"
    for function in stack.functions.values():
        assert function.code_uri.is_dir(), (
            f"{function.logical_id}: CodeUri {function.code_uri} is not a folder"
        )
        assert function.handler_file.is_file(), f"{function.logical_id}: {function.handler_file} is missing"


def test_every_handler_imports_from_its_code_uri_and_is_callable(stack: Stack) -> None:
    # imported by file path without the function's environment: handlers must not read it at import
    for function in stack.functions.values():
        module = load_handler_module(function.handler_file)
        handler = getattr(module, function.handler_function, None)
        assert callable(handler), f"{function.logical_id}: {function.handler} is not a callable"


def test_handler_module_names_are_unique(stack: Stack) -> None:
    names = Counter(f.handler_file.stem for f in stack.functions.values())
    assert [n for n, count in names.items() if count > 1] == []


# ------------------------------------------------------------------------------------------------ routes


def test_every_route_outside_the_public_list_uses_the_jwt_authorizer(stack: Stack) -> None:
    unprotected = []
    for function, route in stack.routes():
        key = (route.method, route.path)
        api = stack.apis[route.api]
        if key in PUBLIC_ROUTES:
            continue
        if route.authorizer is None or route.authorizer not in api.authorizers:
            unprotected.append(f"{function.logical_id}: {route.route_key}")
    assert unprotected == []


def test_public_routes_do_not_require_a_token(stack: Stack) -> None:
    guarded = [
        route.route_key
        for _, route in stack.routes()
        if (route.method, route.path) in PUBLIC_ROUTES and route.authorizer is not None
    ]
    assert guarded == []


def test_the_authorizer_checks_the_tenant_issuer_and_the_api_audience(stack: Stack) -> None:
    for _, route in stack.routes():
        if route.authorizer is None:
            continue
        authorizer = stack.apis[route.api].authorizers[route.authorizer]
        assert authorizer.issuer == f"https://{PARAMETERS['Auth0Domain']}/"  # Auth0's iss has the slash
        assert PARAMETERS["ApiAudience"] in authorizer.audience
        assert authorizer.identity_source == "$request.header.Authorization"


def test_no_two_functions_claim_the_same_route(stack: Stack) -> None:
    keys = Counter((route.api, route.method, route.path) for _, route in stack.routes())
    assert [k for k, count in keys.items() if count > 1] == []


def test_one_variable_name_per_path_level(stack: Stack) -> None:
    """API Gateway refuses (409 ConflictException at deploy) two routes with differently named
    variables at the same level, e.g. ``/invitations/{token}`` and ``/invitations/{invitationId}``."""
    names: dict[tuple[str, ...], set[str]] = {}
    for _, route in stack.routes():
        parts = route.path.strip("/").split("/")
        for depth, part in enumerate(parts):
            if part.startswith("{"):
                names.setdefault(
                    tuple(p if not p.startswith("{") else "{}" for p in parts[:depth]), set()
                ).add(part)
    assert {level: n for level, n in names.items() if len(n) > 1} == {}


def test_function_environments_resolve_to_strings(stack: Stack) -> None:
    table_names = {t.name for t in stack.tables.values()}
    for function in stack.functions.values():
        env = function.environment
        assert all(isinstance(v, str) for v in env.values()), function.logical_id
        assert env.get("TABLE_NAME") in table_names, function.logical_id
        assert env.get("POWERTOOLS_LOGGER_LOG_EVENT", "false") == "false", function.logical_id


# ------------------------------------------------------------------------------------------------ the loader


LOADER_SAMPLE = """
Parameters:
  Stage: {Type: String, Default: dev, AllowedValues: [dev, prod]}
  Names: {Type: CommaDelimitedList, Default: "a,b"}
Conditions:
  IsProd: !Equals [!Ref Stage, prod]
Globals:
  Function:
    Timeout: 10
    Layers: [!Ref Layer]
    Environment:
      Variables:
        STAGE: !Ref Stage
        SHARED: global
Resources:
  Layer:
    Type: AWS::Serverless::LayerVersion
    Properties: {LayerName: !Sub "shared-${Stage}", ContentUri: layer/}
  Table:
    Type: AWS::DynamoDB::Table
    Properties: {TableName: !Sub "users-${Stage}"}
  Fn:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: fn/
      Handler: mod.handler
      Timeout: 20
      Layers: [extra]
      Environment:
        Variables:
          SHARED: local
          TABLE_ARN: !GetAtt Table.Arn
          LITERAL: !Sub "${!NotAVariable}-${AWS::Region}"
          JOINED: !Join ["-", [!Select [1, !Ref Names], !If [IsProd, p, np]]]
          FLAG: true
"""


def test_loader_resolves_short_forms_and_merges_globals_like_sam(tmp_path: Path) -> None:
    path = tmp_path / "template.yaml"
    path.write_text(LOADER_SAMPLE)
    merged = merge_globals(load_template(path))["Resources"]["Fn"]["Properties"]
    assert merged["Timeout"] == 20  # the function's scalar wins
    assert merged["Layers"] == [{"Ref": "Layer"}, "extra"]  # lists concatenate, globals first
    assert merged["Environment"]["Variables"]["STAGE"] == {"Ref": "Stage"}  # maps merge
    assert merged["Environment"]["Variables"]["SHARED"] == "local"

    stack = load_stack(path, parameters={"Stage": "prod"})
    env = stack.functions["Fn"].environment
    assert env["STAGE"] == "prod"
    assert env["TABLE_ARN"] == "arn:aws:dynamodb:eu-central-1:123456789012:table/users-prod"
    assert env["LITERAL"] == "${NotAVariable}-eu-central-1"
    assert env["JOINED"] == "b-p"
    assert env["FLAG"] == "true"
    assert stack.functions["Fn"].timeout == 20
    assert stack.tables["Table"].name == "users-prod"


def test_loader_rejects_what_cloudformation_rejects(tmp_path: Path) -> None:
    path = tmp_path / "template.yaml"
    path.write_text(LOADER_SAMPLE)
    with pytest.raises(TemplateError, match="not one of"):
        load_stack(path, parameters={"Stage": "local"})
    with pytest.raises(TemplateError, match="unknown template parameters"):
        load_stack(path, parameters={"Stag": "dev"})
    path.write_text("Resources:\n  A: {Type: X}\n  A: {Type: Y}\n")
    with pytest.raises(TemplateError, match="duplicate key"):
        load_template(path)


# ------------------------------------------------------------------------------------------------ CORS


def test_the_api_lets_the_configured_origins_call_it_from_a_browser(stack: Stack) -> None:
    cors = stack.apis["UsersApi"].cors
    assert cors is not None, "UsersApi has no CorsConfiguration"
    assert cors.allow_origins == ("https://admin.example.com", "https://shop.example.com")  # the parameter
    assert {h.lower() for h in cors.allow_headers} >= {
        "authorization",
        "content-type",
        "if-match",
        "idempotency-key",
    }
    assert set(cors.allow_methods) >= {"GET", "POST", "PATCH", "DELETE", "OPTIONS"}
    assert {h.lower() for h in cors.expose_headers} >= {"etag", "retry-after", "location"}
    assert cors.max_age is not None and cors.max_age > 0
    assert not cors.allow_credentials  # bearer tokens, no cookies


def test_secret_grants_match_the_suffix_secrets_manager_adds(raw: dict[str, Any]) -> None:
    """IAM matches GetSecretValue against the secret's full ARN (security notes M9): a grant of the
    ARN as a deployer may give it (without the random suffix) must also cover ``-??????``."""
    import fnmatch

    secret_arn = "arn:aws:secretsmanager:eu-central-1:123456789012:secret:usermgmt/dev/auth0"
    full_arn = secret_arn + "-AbCdEf"
    grants = 0
    for resource in raw["Resources"].values():
        for policy in resource.get("Properties", {}).get("Policies", []):
            for statement in policy.get("Statement", []) if isinstance(policy, dict) else []:
                if "secretsmanager:GetSecretValue" not in statement.get("Action", []):
                    continue
                grants += 1
                patterns = []
                for entry in (
                    statement["Resource"]
                    if isinstance(statement["Resource"], list)
                    else [statement["Resource"]]
                ):
                    if "Ref" in entry:
                        patterns.append(secret_arn)
                    else:
                        patterns.append(entry["Fn::Sub"].replace("${Auth0ClientSecretArn}", secret_arn))
                assert any(fnmatch.fnmatchcase(full_arn, p) for p in patterns), patterns
    assert grants > 0


def test_every_function_has_an_errors_and_a_throttles_alarm(raw: dict[str, Any]) -> None:
    resources = raw["Resources"]
    functions = {k for k, r in resources.items() if r["Type"] == "AWS::Serverless::Function"}
    watched: dict[str, set[str]] = {}
    for r in resources.values():
        props = r.get("Properties", {})
        if r["Type"] == "AWS::CloudWatch::Alarm" and props.get("Namespace") == "AWS/Lambda":
            for d in props.get("Dimensions", []):
                if d["Name"] == "FunctionName":
                    watched.setdefault(d["Value"]["Ref"], set()).add(props["MetricName"])
    assert {f: {"Errors", "Throttles"} for f in functions} == {f: watched.get(f, set()) for f in functions}


def test_an_alarm_watches_the_age_of_the_oldest_due_sync_work(raw: dict[str, Any]) -> None:
    """sync-identity publishes the metric under this name (security notes M8): an alarm must watch it,
    at 15 minutes at most, on the metric's maximum."""
    from usermgmt.service.sync import BACKLOG_AGE_METRIC

    alarms = [
        r["Properties"]
        for r in raw["Resources"].values()
        if r["Type"] == "AWS::CloudWatch::Alarm" and r["Properties"].get("MetricName") == BACKLOG_AGE_METRIC
    ]
    assert len(alarms) == 1, alarms
    (alarm,) = alarms
    variables = raw["Globals"]["Function"]["Environment"]["Variables"]
    assert alarm["Namespace"] == variables["POWERTOOLS_METRICS_NAMESPACE"]
    assert alarm["Statistic"] == "Maximum" and alarm["ComparisonOperator"] == "GreaterThanThreshold"
    assert 0 < alarm["Threshold"] <= 900


def test_secret_readers_may_decrypt_a_customer_managed_key_only_through_secrets_manager(
    raw: dict[str, Any],
) -> None:
    """L19: a secret under a customer-managed key needs kms:Decrypt; granted (when the key is given)
    to every function that reads the secret, and only via Secrets Manager."""
    for name, resource in raw["Resources"].items():
        for policy in resource.get("Properties", {}).get("Policies", []):
            statements = policy.get("Statement", []) if isinstance(policy, dict) else []
            if not any(
                "secretsmanager:GetSecretValue" in s.get("Action", []) for s in statements if "Action" in s
            ):
                continue
            decrypts = [
                s["Fn::If"]
                for s in statements
                if isinstance(s, dict) and "Fn::If" in s and s["Fn::If"][0] == "HasSecretKmsKey"
            ]
            assert len(decrypts) == 1, f"{name} reads the secret but cannot decrypt a customer-managed key"
            (_, granted, otherwise) = decrypts[0]
            assert granted["Action"] == "kms:Decrypt" and granted["Resource"] == {
                "Ref": "Auth0SecretKmsKeyArn"
            }
            assert "kms:ViaService" in granted["Condition"]["StringEquals"]
            assert otherwise == {"Ref": "AWS::NoValue"}


def _storefront_rules(stack: Stack) -> list[Any]:
    bus = stack.parameters["StorefrontBusName"]
    return [rule for f in stack.functions.values() for rule in f.rules if rule.bus_name == bus]


@pytest.mark.parametrize("account", ["", "210987654321"])
def test_storefront_rules_accept_events_of_one_account_only(raw: dict[str, Any], account: str) -> None:
    from local.eventbus import matches_pattern

    declared = raw.get("Parameters") or {}
    parameters = {k: v for k, v in PARAMETERS.items() if k in declared}
    stack = load_stack(TEMPLATE, parameters={**parameters, "StorefrontAccountId": account})
    rules = _storefront_rules(stack)
    assert len(rules) == 3  # password reset, verification, sign-up
    allowed = account or stack.resolver.account_id  # empty: the stack's own account (security notes L19)
    for rule in rules:
        event = {"account": allowed, "source": stack.parameters["StorefrontSource"]}
        event["detail-type"] = rule.pattern["detail-type"][0]
        assert matches_pattern(rule.pattern, event), rule.event_id
        assert not matches_pattern(rule.pattern, {**event, "account": "999999999999"}), rule.event_id
