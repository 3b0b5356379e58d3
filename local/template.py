"""Read ``template.yaml`` the way the deploy reads it, for the local stack and the template tests.

* ``load_template``: PyYAML ``SafeLoader`` subclass that turns the CloudFormation short forms (``!Ref``,
  ``!Sub``, ``!GetAtt A.B``, ``!If`` ...) into their long ``{"Fn::...": ...}`` dict forms and refuses
  duplicate keys (CloudFormation does too).
* ``merge_globals``: ``Globals`` merged into every SAM resource the way SAM does it: maps merge
  recursively, lists concatenate (globals first), the resource's own scalar wins; an intrinsic function
  counts as a scalar.
* ``Resolver``: resolves ``Ref``, ``Fn::Sub``, ``Fn::GetAtt``, ``Fn::Join``, ``Fn::Select``, ``Fn::Split``,
  ``Fn::If`` (with ``Conditions``), ``Fn::FindInMap``, ``Fn::Base64`` against parameter values (defaults +
  overrides), pseudo parameters and local physical names / ARNs of the template's resources.
* ``load_stack``: the small typed model the local stack runs from (functions with their routes,
  schedules and EventBridge rules, HTTP API authorizers, tables, queues, buses).
* ``references`` / ``unknown_references``: every ``Ref`` / ``GetAtt`` / ``Sub`` target, for the test that
  catches a mistyped ``!Ref`` (cfn-lint misses those inside a ``AWS::Serverless::Function``).
"""

from __future__ import annotations

import base64
import copy
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import yaml

__all__ = [
    "Bus",
    "CorsConfiguration",
    "EventRule",
    "Function",
    "HttpApi",
    "HttpRoute",
    "JwtAuthorizer",
    "Physical",
    "Queue",
    "Reference",
    "Resolver",
    "Schedule",
    "Stack",
    "Table",
    "TemplateError",
    "known_targets",
    "load_stack",
    "load_template",
    "merge_globals",
    "references",
    "unknown_references",
]

SERVERLESS_FUNCTION = "AWS::Serverless::Function"
SERVERLESS_HTTP_API = "AWS::Serverless::HttpApi"
IMPLICIT_HTTP_API = "ServerlessHttpApi"
IMPLICIT_REST_API = "ServerlessRestApi"
DEFAULT_ROUTE = "$default"

# Globals section -> resource type it applies to (SAM's list).
GLOBAL_SECTIONS: dict[str, str] = {
    "Function": SERVERLESS_FUNCTION,
    "Api": "AWS::Serverless::Api",
    "HttpApi": SERVERLESS_HTTP_API,
    "SimpleTable": "AWS::Serverless::SimpleTable",
    "StateMachine": "AWS::Serverless::StateMachine",
    "LayerVersion": "AWS::Serverless::LayerVersion",
}

PSEUDO_PARAMETERS = frozenset(
    {
        "AWS::AccountId",
        "AWS::NotificationARNs",
        "AWS::NoValue",
        "AWS::Partition",
        "AWS::Region",
        "AWS::StackId",
        "AWS::StackName",
        "AWS::URLSuffix",
    }
)

INTRINSICS = frozenset(
    {
        "Ref",
        "Condition",
        "Fn::Base64",
        "Fn::Cidr",
        "Fn::FindInMap",
        "Fn::GetAtt",
        "Fn::GetAZs",
        "Fn::If",
        "Fn::ImportValue",
        "Fn::Join",
        "Fn::Select",
        "Fn::Split",
        "Fn::Sub",
        "Fn::Transform",
        "Fn::Equals",
        "Fn::Not",
        "Fn::And",
        "Fn::Or",
    }
)

_SUB_VAR = re.compile(r"\$\{([^}]*)\}")


class TemplateError(Exception):
    """The template cannot be read or resolved the way the local stack needs it."""


# ------------------------------------------------------------------------------------------------
# YAML
# ------------------------------------------------------------------------------------------------


class CfnLoader(yaml.SafeLoader):
    """SafeLoader that knows CloudFormation's short-form tags and refuses duplicate mapping keys."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        mapping: dict[Any, Any] = super().construct_mapping(node, deep=deep)
        return mapping


def _node_value(loader: CfnLoader, node: yaml.Node) -> Any:
    if isinstance(node, yaml.ScalarNode):
        return loader.construct_scalar(node)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node, deep=True)
    raise yaml.constructor.ConstructorError(None, None, f"unexpected node {node.tag}", node.start_mark)


def _long_form(name: str) -> Any:
    def construct(loader: CfnLoader, node: yaml.Node) -> dict[str, Any]:
        return {name: _node_value(loader, node)}

    return construct


def _construct_getatt(loader: CfnLoader, node: yaml.Node) -> dict[str, Any]:
    value = _node_value(loader, node)
    if isinstance(value, str):
        logical_id, dot, attribute = value.partition(".")
        if not dot or not logical_id or not attribute:
            raise yaml.constructor.ConstructorError(
                None, None, f"!GetAtt {value!r} is not LogicalId.Attribute", node.start_mark
            )
        return {"Fn::GetAtt": [logical_id, attribute]}
    return {"Fn::GetAtt": value}


for _tag in ("Ref", "Condition"):
    CfnLoader.add_constructor(f"!{_tag}", _long_form(_tag))
for _tag in (
    "Sub",
    "If",
    "Equals",
    "Join",
    "Select",
    "Split",
    "ImportValue",
    "FindInMap",
    "Not",
    "And",
    "Or",
    "Base64",
    "Cidr",
    "GetAZs",
    "Transform",
):
    CfnLoader.add_constructor(f"!{_tag}", _long_form(f"Fn::{_tag}"))
CfnLoader.add_constructor("!GetAtt", _construct_getatt)


def load_template(path: str | Path) -> dict[str, Any]:
    """The template as plain data, intrinsics in their long ``{"Fn::...": ...}`` forms."""
    text = Path(path).read_text(encoding="utf-8")
    try:
        data = yaml.load(text, Loader=CfnLoader)  # noqa: S506 - CfnLoader is a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise TemplateError(f"{path}: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("Resources"), dict):
        raise TemplateError(f"{path}: not a template (no Resources section)")
    return data


# ------------------------------------------------------------------------------------------------
# Globals
# ------------------------------------------------------------------------------------------------


def is_intrinsic(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and next(iter(value)) in INTRINSICS


def merge_values(global_value: Any, local_value: Any) -> Any:
    """SAM's Globals merge: maps merge recursively, lists concatenate, otherwise the local value wins."""
    if isinstance(global_value, dict) and isinstance(local_value, dict):
        if is_intrinsic(global_value) or is_intrinsic(local_value):
            return copy.deepcopy(local_value)
        merged = copy.deepcopy(global_value)
        for key, value in local_value.items():
            merged[key] = merge_values(merged[key], value) if key in merged else copy.deepcopy(value)
        return merged
    if isinstance(global_value, list) and isinstance(local_value, list):
        return copy.deepcopy(global_value) + copy.deepcopy(local_value)
    return copy.deepcopy(local_value)


def merge_globals(template: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of the template without ``Globals``, each SAM resource's Properties merged with them."""
    result = copy.deepcopy(dict(template))
    globals_ = result.pop("Globals", None) or {}
    for section, values in globals_.items():
        resource_type = GLOBAL_SECTIONS.get(section)
        if resource_type is None:
            raise TemplateError(f"Globals.{section} is not a SAM Globals section")
        for resource in result["Resources"].values():
            if isinstance(resource, dict) and resource.get("Type") == resource_type:
                resource["Properties"] = merge_values(values or {}, resource.get("Properties") or {})
    return result


# ------------------------------------------------------------------------------------------------
# References (for the template test)
# ------------------------------------------------------------------------------------------------


class Reference(NamedTuple):
    """``kind`` is Ref, GetAtt, Sub or Condition; ``target`` is ``LogicalId`` or ``LogicalId.Attribute``."""

    kind: str
    target: str


def _sub_parts(value: Any) -> tuple[str, dict[str, Any]]:
    if isinstance(value, str):
        return value, {}
    if (
        isinstance(value, list)
        and len(value) == 2
        and isinstance(value[0], str)
        and isinstance(value[1], dict)
    ):
        return value[0], value[1]
    raise TemplateError(f"malformed Fn::Sub: {value!r}")


def _sub_variables(text: str) -> Iterator[str]:
    for match in _SUB_VAR.finditer(text):
        name = match.group(1).strip()
        if name and not name.startswith("!"):
            yield name


def references(template: Any) -> set[Reference]:
    """Every Ref / GetAtt / Sub variable / Condition target anywhere in ``template`` (raw or merged)."""
    found: set[Reference] = set()

    def walk(node: Any) -> None:
        if isinstance(node, list):
            for item in node:
                walk(item)
            return
        if not isinstance(node, dict):
            return
        if is_intrinsic(node):
            name, value = next(iter(node.items()))
            if name == "Ref" and isinstance(value, str):
                found.add(Reference("Ref", value))
                return
            if name == "Condition" and isinstance(value, str):
                found.add(Reference("Condition", value))
                return
            if name == "Fn::GetAtt":
                if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
                    found.add(Reference("GetAtt", ".".join(value)))
                elif isinstance(value, str):
                    found.add(Reference("GetAtt", value))
                else:
                    walk(value)
                return
            if name == "Fn::Sub":
                text, variables = _sub_parts(value)
                for variable in _sub_variables(text):
                    if variable not in variables:
                        found.add(Reference("Sub", variable))
                walk(list(variables.values()))
                return
            if name == "Fn::If" and isinstance(value, list) and value and isinstance(value[0], str):
                found.add(Reference("Condition", value[0]))
                walk(value[1:])
                return
            walk(value)
            return
        for key, value in node.items():
            if key == "Condition" and isinstance(value, str):
                # a resource's / output's own condition
                found.add(Reference("Condition", value))
                continue
            walk(value)

    walk({k: v for k, v in dict(template).items() if k != "Conditions"})
    walk(dict(template).get("Conditions") or {})
    return found


def _events(resource: Mapping[str, Any]) -> Mapping[str, Any]:
    events = (resource.get("Properties") or {}).get("Events") or {}
    return events if isinstance(events, dict) else {}


def sam_generated_ids(template: Mapping[str, Any]) -> set[str]:
    """Logical ids the SAM transform adds (so a template may reference them).

    From SAM's documented "generated CloudFormation resources": a function without ``Role`` gets
    ``<Function>Role``; HttpApi events without ``ApiId`` create ``ServerlessHttpApi`` (Api events
    ``ServerlessRestApi``); an HttpApi ``X`` gets its ``$default`` stage ``XApiGatewayDefaultStage``; a
    Schedule / EventBridgeRule event creates the rule ``<Function><Event>`` (and its Lambda permission
    ``<Function><Event>Permission``), a ScheduleV2 event the schedule ``<Function><Event>`` and its role
    ``<Function><Event>Role``; an EventBridgeRule ``DeadLetterConfig`` with ``Type: SQS`` creates the queue
    ``QueueLogicalId`` or ``<Function><Event>Queue``.
    """
    merged = merge_globals(template)
    ids: set[str] = set()
    for logical_id, resource in merged["Resources"].items():
        kind = resource.get("Type")
        props = resource.get("Properties") or {}
        if kind == SERVERLESS_HTTP_API:
            ids.add(f"{logical_id}ApiGatewayDefaultStage")
        if kind != SERVERLESS_FUNCTION:
            continue
        if "Role" not in props:
            ids.add(f"{logical_id}Role")
        for event_id, event in _events(resource).items():
            event_type = event.get("Type")
            event_props = event.get("Properties") or {}
            if event_type == "HttpApi" and "ApiId" not in event_props:
                ids.add(IMPLICIT_HTTP_API)
            if event_type == "Api" and "RestApiId" not in event_props:
                ids.add(IMPLICIT_REST_API)
            if event_type in ("Schedule", "EventBridgeRule", "CloudWatchEvent"):
                ids.update({f"{logical_id}{event_id}", f"{logical_id}{event_id}Permission"})
            if event_type == "ScheduleV2":
                ids.update({f"{logical_id}{event_id}", f"{logical_id}{event_id}Role"})
            dlq = event_props.get("DeadLetterConfig") or {}
            if event_type in ("Schedule", "EventBridgeRule", "ScheduleV2") and dlq.get("Type") == "SQS":
                ids.add(str(dlq.get("QueueLogicalId") or f"{logical_id}{event_id}Queue"))
    return ids


def known_targets(template: Mapping[str, Any]) -> set[str]:
    """Names a Ref / GetAtt / Sub may point at: parameters, resources, pseudo parameters, SAM's own."""
    names = set(template.get("Parameters") or {}) | set(template["Resources"]) | set(PSEUDO_PARAMETERS)
    return names | sam_generated_ids(template)


def unknown_references(template: Mapping[str, Any]) -> list[str]:
    """Human-readable problems: references to names the template does not define (empty when fine)."""
    names = known_targets(template)
    conditions = set(template.get("Conditions") or {})
    resources = template["Resources"]
    problems: list[str] = []
    for ref in sorted(references(template)):
        if ref.kind == "Condition":
            if ref.target not in conditions:
                problems.append(f"Condition {ref.target!r} is not defined in Conditions")
            continue
        base, _, attribute = ref.target.partition(".")
        if ref.target in names or (base in names and (ref.kind != "Ref" or not attribute)):
            continue
        # SAM's own Ref forms: !Ref Function.Alias / Function.Version (AutoPublishAlias)
        if ref.kind in ("Ref", "Sub") and attribute in ("Alias", "Version") and base in resources:
            props = merge_globals(template)["Resources"][base].get("Properties") or {}
            if props.get("AutoPublishAlias"):
                continue
        problems.append(f"{ref.kind} target {ref.target!r} is neither a parameter nor a resource")
    return problems


# ------------------------------------------------------------------------------------------------
# Resolution
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Physical:
    """What ``Ref`` answers for a resource, and its ``GetAtt`` attributes."""

    ref: str
    attributes: Mapping[str, str] = field(default_factory=dict)


class _NoValue:
    def __repr__(self) -> str:
        return "AWS::NoValue"


NO_VALUE = _NoValue()


class Resolver:
    """Resolves intrinsic functions against local values. Unknown names raise ``TemplateError``."""

    def __init__(
        self,
        template: Mapping[str, Any],
        *,
        parameters: Mapping[str, str] | None = None,
        physical: Mapping[str, Physical] | None = None,
        region: str = "eu-central-1",
        account_id: str = "123456789012",
        stack_name: str = "usermgmt-local",
        sqs_endpoint: str | None = None,
    ) -> None:
        self.template = merge_globals(template)
        self.region = region
        self.account_id = account_id
        self.stack_name = stack_name
        self.sqs_endpoint = (sqs_endpoint or f"https://sqs.{region}.amazonaws.com").rstrip("/")
        self.parameters = self._parameter_values(parameters or {})
        self._physical_overrides = dict(physical or {})
        self._physical_cache: dict[str, Physical] = {}
        self._conditions: dict[str, bool] = {}
        self.globals: Mapping[str, Any] = copy.deepcopy(dict(template).get("Globals") or {})
        self.generated_ids = sam_generated_ids(template)
        self.generated_queues = self._sam_queues()

    # -------------------------------------------------------------------------------- parameters
    def _parameter_values(self, overrides: Mapping[str, str]) -> dict[str, Any]:
        declared: Mapping[str, Any] = self.template.get("Parameters") or {}
        unknown = sorted(set(overrides) - set(declared))
        if unknown:
            raise TemplateError(f"unknown template parameters: {', '.join(unknown)}")
        values: dict[str, Any] = {}
        missing: list[str] = []
        for name, spec in declared.items():
            if name in overrides:
                raw: Any = overrides[name]
            elif "Default" in spec:
                raw = spec["Default"]
            else:
                missing.append(name)
                continue
            text = _scalar_text(raw)
            allowed = spec.get("AllowedValues")
            if allowed is not None and text not in [_scalar_text(a) for a in allowed]:
                raise TemplateError(f"parameter {name}={text!r} is not one of {allowed}")
            kind = str(spec.get("Type", "String"))
            if kind == "CommaDelimitedList" or kind.startswith("List<"):
                values[name] = [part.strip() for part in text.split(",")] if text else []
            else:
                values[name] = text
        if missing:
            raise TemplateError(f"template parameters without a value: {', '.join(missing)}")
        return values

    # -------------------------------------------------------------------------------- physical names
    def _sam_queues(self) -> dict[str, str]:
        """Queues SAM creates for EventBridgeRule / Schedule dead-letter configs: logical id -> rule id."""
        queues: dict[str, str] = {}
        for logical_id, resource in self.template["Resources"].items():
            if resource.get("Type") != SERVERLESS_FUNCTION:
                continue
            for event_id, event in _events(resource).items():
                dlq = (event.get("Properties") or {}).get("DeadLetterConfig") or {}
                if dlq.get("Type") == "SQS":
                    queues[str(dlq.get("QueueLogicalId") or f"{logical_id}{event_id}Queue")] = (
                        f"{logical_id}{event_id}"
                    )
        return queues

    def set_physical(self, logical_id: str, physical: Physical) -> None:
        self._physical_overrides[logical_id] = physical
        self._physical_cache.pop(logical_id, None)

    def physical(self, logical_id: str) -> Physical:
        if logical_id in self._physical_overrides:
            return self._physical_overrides[logical_id]
        if logical_id not in self._physical_cache:
            self._physical_cache[logical_id] = self._default_physical(logical_id)
        return self._physical_cache[logical_id]

    def _arn(self, service: str, resource: str) -> str:
        return f"arn:aws:{service}:{self.region}:{self.account_id}:{resource}"

    def _default_physical(self, logical_id: str) -> Physical:
        resources: Mapping[str, Any] = self.template["Resources"]
        if logical_id in self.generated_queues:
            return self._queue_physical(f"{self.stack_name}-{logical_id}")
        if logical_id not in resources:
            if logical_id in self.generated_ids:
                name = f"{self.stack_name}-{logical_id}"
                if logical_id.endswith("Role"):
                    return Physical(name, {"Arn": f"arn:aws:iam::{self.account_id}:role/{name}"})
                return Physical(name, {"Arn": self._arn("lambda", name)})
            raise TemplateError(f"{logical_id!r} is neither a parameter nor a resource")
        resource = resources[logical_id]
        kind = str(resource.get("Type", ""))
        props: Mapping[str, Any] = resource.get("Properties") or {}

        def named(prop: str, default: str | None = None) -> str:
            if prop in props:
                return str(self.resolve(props[prop]))
            return default if default is not None else f"{self.stack_name}-{logical_id}"

        if kind == "AWS::DynamoDB::Table":
            name = named("TableName")
            arn = self._arn("dynamodb", f"table/{name}")
            return Physical(name, {"Arn": arn, "StreamArn": f"{arn}/stream/local"})
        if kind == "AWS::SQS::Queue":
            name = named("QueueName")
            if props.get("FifoQueue") and not name.endswith(".fifo"):
                name += ".fifo"
            return self._queue_physical(name)
        if kind == "AWS::Events::EventBus":
            name = named("Name")
            return Physical(name, {"Arn": self._arn("events", f"event-bus/{name}"), "Name": name})
        if kind in (SERVERLESS_FUNCTION, "AWS::Lambda::Function"):
            name = named("FunctionName")
            return Physical(name, {"Arn": self._arn("lambda", f"function:{name}")})
        if kind == "AWS::Logs::LogGroup":
            name = named("LogGroupName", f"/aws/{self.stack_name}/{logical_id}")
            return Physical(name, {"Arn": self._arn("logs", f"log-group:{name}:*")})
        if kind in (SERVERLESS_HTTP_API, "AWS::ApiGatewayV2::Api"):
            api_id = logical_id.lower()[:10]
            return Physical(
                api_id, {"ApiEndpoint": f"https://{api_id}.execute-api.{self.region}.amazonaws.com"}
            )
        if kind in ("AWS::Serverless::LayerVersion", "AWS::Lambda::LayerVersion"):
            name = named("LayerName")
            return Physical(self._arn("lambda", f"layer:{name}:1"))
        if kind in ("AWS::SNS::Topic", "AWS::SecretsManager::Secret", "AWS::IAM::ManagedPolicy"):
            service = kind.split("::")[1].lower()
            arn = self._arn(service, f"{self.stack_name}-{logical_id}")
            return Physical(arn, {"Arn": arn})
        service = kind.split("::")[1].lower() if kind.count("::") == 2 else "unknown"
        name = f"{self.stack_name}-{logical_id}"
        return Physical(name, {"Arn": self._arn(service, name)})

    def _queue_physical(self, name: str) -> Physical:
        url = f"{self.sqs_endpoint}/{self.account_id}/{name}"
        return Physical(url, {"Arn": self._arn("sqs", name), "QueueName": name, "QueueUrl": url})

    # -------------------------------------------------------------------------------- intrinsics
    def pseudo(self, name: str) -> Any:
        values: dict[str, Any] = {
            "AWS::AccountId": self.account_id,
            "AWS::Region": self.region,
            "AWS::StackName": self.stack_name,
            "AWS::StackId": self._arn("cloudformation", f"stack/{self.stack_name}/local"),
            "AWS::Partition": "aws",
            "AWS::URLSuffix": "amazonaws.com",
            "AWS::NotificationARNs": [],
            "AWS::NoValue": NO_VALUE,
        }
        return values[name]

    def ref(self, name: str) -> Any:
        if name in PSEUDO_PARAMETERS:
            return self.pseudo(name)
        if name in self.parameters:
            return self.parameters[name]
        return self.physical(name).ref

    def get_att(self, logical_id: str, attribute: str) -> str:
        physical = self.physical(logical_id)
        if attribute not in physical.attributes:
            raise TemplateError(f"cannot resolve !GetAtt {logical_id}.{attribute} locally")
        return physical.attributes[attribute]

    def condition(self, name: str) -> bool:
        if name not in self._conditions:
            conditions: Mapping[str, Any] = self.template.get("Conditions") or {}
            if name not in conditions:
                raise TemplateError(f"condition {name!r} is not defined")
            self._conditions[name] = bool(self.resolve(conditions[name]))
        return self._conditions[name]

    def sub(self, value: Any) -> str:
        text, variables = _sub_parts(value)
        resolved = {k: self.resolve(v) for k, v in variables.items()}

        def replace(match: re.Match[str]) -> str:
            name = match.group(1).strip()
            if name.startswith("!"):
                return "${" + name[1:] + "}"
            if name in resolved:
                return _scalar_text(resolved[name])
            if name in PSEUDO_PARAMETERS or name in self.parameters:
                return _scalar_text(self.ref(name))
            if "." in name:
                logical_id, _, attribute = name.partition(".")
                return self.get_att(logical_id, attribute)
            return _scalar_text(self.ref(name))

        return _SUB_VAR.sub(replace, text)

    def resolve(self, value: Any) -> Any:
        """``value`` with every intrinsic resolved (``AWS::NoValue`` entries dropped)."""
        if isinstance(value, list):
            items = [self.resolve(v) for v in value]
            return [v for v in items if v is not NO_VALUE]
        if not isinstance(value, dict):
            return value
        if not is_intrinsic(value):
            resolved = {k: self.resolve(v) for k, v in value.items()}
            return {k: v for k, v in resolved.items() if v is not NO_VALUE}
        name, arg = next(iter(value.items()))
        if name == "Ref":
            return self.ref(str(arg))
        if name == "Condition":
            return self.condition(str(arg))
        if name == "Fn::Sub":
            return self.sub(arg)
        if name == "Fn::GetAtt":
            parts = arg.split(".", 1) if isinstance(arg, str) else [self.resolve(a) for a in arg]
            if len(parts) != 2:
                raise TemplateError(f"malformed Fn::GetAtt: {arg!r}")
            return self.get_att(str(parts[0]), str(parts[1]))
        if name == "Fn::Join":
            delimiter, items = arg
            return str(delimiter).join(_scalar_text(v) for v in self.resolve(items))
        if name == "Fn::Select":
            index, items = arg
            return self.resolve(items)[int(self.resolve(index))]
        if name == "Fn::Split":
            delimiter, text = arg
            return str(self.resolve(text)).split(str(delimiter))
        if name == "Fn::If":
            condition, when_true, when_false = arg
            return self.resolve(when_true if self.condition(str(condition)) else when_false)
        if name == "Fn::Equals":
            left, right = (self.resolve(v) for v in arg)
            return _scalar_text(left) == _scalar_text(right)
        if name == "Fn::Not":
            return not self.resolve(arg[0])
        if name == "Fn::And":
            return all(self.resolve(v) for v in arg)
        if name == "Fn::Or":
            return any(self.resolve(v) for v in arg)
        if name == "Fn::FindInMap":
            map_name, top, second = (self.resolve(v) for v in arg[:3])
            try:
                return self.template["Mappings"][map_name][top][second]
            except KeyError:
                raise TemplateError(f"Fn::FindInMap {map_name}/{top}/{second} not found") from None
        if name == "Fn::Base64":
            return base64.b64encode(str(self.resolve(arg)).encode()).decode()
        raise TemplateError(f"{name} cannot be resolved locally")


def _scalar_text(value: Any) -> str:
    """How CloudFormation turns a YAML scalar into a string (booleans lower-case)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(_scalar_text(v) for v in value)
    return str(value)


# ------------------------------------------------------------------------------------------------
# The typed model
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class JwtAuthorizer:
    name: str
    issuer: str
    audience: tuple[str, ...]
    identity_source: str = "$request.header.Authorization"
    default_scopes: tuple[str, ...] = ()


@dataclass(frozen=True)
class CorsConfiguration:
    """An HttpApi's ``CorsConfiguration`` (``true`` means every origin, method and header)."""

    allow_origins: tuple[str, ...] = ()
    allow_headers: tuple[str, ...] = ()
    allow_methods: tuple[str, ...] = ()
    expose_headers: tuple[str, ...] = ()
    max_age: int | None = None
    allow_credentials: bool = False


@dataclass(frozen=True)
class HttpApi:
    logical_id: str
    api_id: str
    default_authorizer: str | None
    authorizers: Mapping[str, JwtAuthorizer]
    unsupported_authorizers: frozenset[str] = frozenset()
    cors: CorsConfiguration | None = None


@dataclass(frozen=True)
class HttpRoute:
    """One HttpApi event. ``authorizer`` None means the route is public (``Authorizer: NONE``)."""

    event_id: str
    api: str
    method: str  # upper case, or ANY
    path: str  # /users/{userId}, or $default
    authorizer: str | None
    scopes: tuple[str, ...] = ()
    payload_format: str = "2.0"

    @property
    def route_key(self) -> str:
        return DEFAULT_ROUTE if self.path == DEFAULT_ROUTE else f"{self.method} {self.path}"


@dataclass(frozen=True)
class Schedule:
    event_id: str
    kind: str  # Schedule | ScheduleV2
    expression: str
    enabled: bool = True
    input: str | None = None


@dataclass(frozen=True)
class EventRule:
    event_id: str
    rule_name: str
    bus_name: str
    pattern: Mapping[str, Any]
    maximum_retry_attempts: int | None = None
    maximum_event_age_seconds: int | None = None
    dlq_arn: str | None = None
    dlq_logical_id: str | None = None
    input: str | None = None
    input_path: str | None = None
    enabled: bool = True


@dataclass(frozen=True)
class Function:
    logical_id: str
    name: str
    arn: str
    code_uri: Path
    handler: str
    runtime: str
    timeout: int
    memory_size: int
    environment: Mapping[str, str]
    routes: tuple[HttpRoute, ...] = ()
    schedules: tuple[Schedule, ...] = ()
    rules: tuple[EventRule, ...] = ()
    streams: tuple[StreamSource, ...] = ()

    @property
    def handler_module(self) -> str:
        """The handler's module relative to CodeUri (``update_user`` for ``update_user.lambda_handler``)."""
        return self.handler.rpartition(".")[0]

    @property
    def handler_function(self) -> str:
        return self.handler.rpartition(".")[2]

    @property
    def handler_file(self) -> Path:
        module = self.handler_module
        relative = module if "/" in module else module.replace(".", "/")
        return self.code_uri / f"{relative}.py"


@dataclass(frozen=True)
class StreamSource:
    """A ``DynamoDB`` event: an event source mapping on a table's stream."""

    event_id: str
    table: str  # logical id of the table whose StreamArn it names
    batch_size: int
    filters: tuple[Mapping[str, Any], ...]  # FilterCriteria patterns (any one matches)
    max_retries: int


@dataclass(frozen=True)
class Table:
    logical_id: str
    name: str
    properties: Mapping[str, Any]


@dataclass(frozen=True)
class Queue:
    logical_id: str
    name: str
    properties: Mapping[str, Any]
    generated: bool = False


@dataclass(frozen=True)
class Bus:
    logical_id: str
    name: str


@dataclass
class Stack:
    """The resolved, typed view of the template the local stack runs from."""

    path: Path
    resolver: Resolver
    functions: dict[str, Function]
    apis: dict[str, HttpApi]
    tables: dict[str, Table]
    queues: dict[str, Queue]
    buses: dict[str, Bus]

    @property
    def parameters(self) -> Mapping[str, Any]:
        return self.resolver.parameters

    @property
    def region(self) -> str:
        return self.resolver.region

    @property
    def account_id(self) -> str:
        return self.resolver.account_id

    def routes(self) -> Iterator[tuple[Function, HttpRoute]]:
        for function in self.functions.values():
            for route in function.routes:
                yield function, route


def load_stack(
    path: str | Path,
    *,
    parameters: Mapping[str, str] | None = None,
    physical: Mapping[str, Physical] | None = None,
    region: str = "eu-central-1",
    account_id: str = "123456789012",
    stack_name: str = "usermgmt-local",
    sqs_endpoint: str | None = None,
) -> Stack:
    """Load, merge Globals, resolve against local values and build the typed model."""
    path = Path(path).resolve()
    raw = load_template(path)
    resolver = Resolver(
        raw,
        parameters=parameters,
        physical=physical,
        region=region,
        account_id=account_id,
        stack_name=stack_name,
        sqs_endpoint=sqs_endpoint,
    )
    return _build(path, resolver)


def _build(path: Path, resolver: Resolver) -> Stack:
    resources: Mapping[str, Any] = resolver.template["Resources"]
    apis: dict[str, HttpApi] = {}
    for logical_id, resource in resources.items():
        if resource.get("Type") == SERVERLESS_HTTP_API:
            apis[logical_id] = _http_api(logical_id, resource.get("Properties") or {}, resolver)
    if IMPLICIT_HTTP_API in resolver.generated_ids:
        globals_ = resolver.globals.get("HttpApi") or {}
        apis[IMPLICIT_HTTP_API] = _http_api(IMPLICIT_HTTP_API, globals_, resolver)

    functions: dict[str, Function] = {}
    tables: dict[str, Table] = {}
    queues: dict[str, Queue] = {}
    buses: dict[str, Bus] = {}
    for logical_id, resource in resources.items():
        kind = resource.get("Type")
        props: Mapping[str, Any] = resource.get("Properties") or {}
        if kind == SERVERLESS_FUNCTION:
            functions[logical_id] = _function(path.parent, logical_id, props, resolver, apis)
        elif kind == "AWS::DynamoDB::Table":
            tables[logical_id] = Table(logical_id, resolver.ref(logical_id), resolver.resolve(props))
        elif kind == "AWS::SQS::Queue":
            name = resolver.get_att(logical_id, "QueueName")
            queues[logical_id] = Queue(logical_id, name, resolver.resolve(props))
        elif kind == "AWS::Events::EventBus":
            buses[logical_id] = Bus(logical_id, resolver.ref(logical_id))
    for logical_id in resolver.generated_queues:
        queues[logical_id] = Queue(logical_id, resolver.get_att(logical_id, "QueueName"), {}, generated=True)
    return Stack(path, resolver, functions, apis, tables, queues, buses)


def _http_api(logical_id: str, props: Mapping[str, Any], resolver: Resolver) -> HttpApi:
    auth: Mapping[str, Any] = props.get("Auth") or {}
    authorizers: dict[str, JwtAuthorizer] = {}
    unsupported: set[str] = set()
    for name, spec in (auth.get("Authorizers") or {}).items():
        jwt_config = spec.get("JwtConfiguration")
        if not jwt_config:
            unsupported.add(name)
            continue
        audience = resolver.resolve(jwt_config.get("audience") or jwt_config.get("Audience") or [])
        authorizers[name] = JwtAuthorizer(
            name=name,
            issuer=str(resolver.resolve(jwt_config.get("issuer") or jwt_config.get("Issuer") or "")),
            audience=tuple(str(a) for a in (audience if isinstance(audience, list) else [audience])),
            identity_source=str(
                resolver.resolve(spec.get("IdentitySource", "$request.header.Authorization"))
            ),
            default_scopes=tuple(str(s) for s in resolver.resolve(spec.get("AuthorizationScopes") or [])),
        )
    default = auth.get("DefaultAuthorizer")
    return HttpApi(
        logical_id=logical_id,
        api_id=resolver.ref(logical_id) if logical_id != IMPLICIT_HTTP_API else "serverless",
        default_authorizer=str(default) if default else None,
        authorizers=authorizers,
        unsupported_authorizers=frozenset(unsupported),
        cors=_cors(resolver.resolve(props.get("CorsConfiguration"))),
    )


def _cors(spec: Any) -> CorsConfiguration | None:
    if spec is None or spec is False:
        return None
    if spec is True:
        return CorsConfiguration(allow_origins=("*",), allow_headers=("*",), allow_methods=("*",))
    if not isinstance(spec, Mapping):
        raise TemplateError(f"CorsConfiguration must be true or an object, not {spec!r}")

    def names(key: str) -> tuple[str, ...]:
        value = spec.get(key) or []
        return tuple(
            str(v).strip() for v in (value if isinstance(value, list) else [value]) if str(v).strip()
        )

    max_age = spec.get("MaxAge")
    return CorsConfiguration(
        allow_origins=names("AllowOrigins"),
        allow_headers=names("AllowHeaders"),
        allow_methods=names("AllowMethods"),
        expose_headers=names("ExposeHeaders"),
        max_age=int(max_age) if max_age is not None else None,
        allow_credentials=str(spec.get("AllowCredentials", False)).lower() == "true",
    )


def _api_logical_id(value: Any) -> str:
    if isinstance(value, dict) and "Ref" in value:
        return str(value["Ref"])
    if value is None:
        return IMPLICIT_HTTP_API
    raise TemplateError(f"HttpApi ApiId must be a !Ref to an AWS::Serverless::HttpApi, not {value!r}")


def _function(
    root: Path, logical_id: str, props: Mapping[str, Any], resolver: Resolver, apis: Mapping[str, HttpApi]
) -> Function:
    code_uri = resolver.resolve(props.get("CodeUri"))
    if not isinstance(code_uri, str):
        raise TemplateError(f"{logical_id}: CodeUri must be a local folder for the local stack")
    handler = resolver.resolve(props.get("Handler"))
    if not isinstance(handler, str) or "." not in handler:
        raise TemplateError(f"{logical_id}: Handler must be module.function")
    variables = ((props.get("Environment") or {}).get("Variables")) or {}
    environment = {str(k): _scalar_text(v) for k, v in resolver.resolve(variables).items()}
    routes: list[HttpRoute] = []
    schedules: list[Schedule] = []
    rules: list[EventRule] = []
    streams: list[StreamSource] = []
    for event_id, event in (props.get("Events") or {}).items():
        event_type = event.get("Type")
        event_props: Mapping[str, Any] = event.get("Properties") or {}
        if event_type == "HttpApi":
            routes.append(_route(logical_id, event_id, event_props, resolver, apis))
        elif event_type in ("Schedule", "ScheduleV2"):
            schedules.append(_schedule(event_id, str(event_type), event_props, resolver))
        elif event_type == "EventBridgeRule":
            rules.append(_rule(logical_id, event_id, event_props, resolver))
        elif event_type == "DynamoDB":
            streams.append(_stream(logical_id, event_id, event_props, resolver))
    physical = resolver.physical(logical_id)
    return Function(
        logical_id=logical_id,
        name=physical.ref,
        arn=physical.attributes["Arn"],
        code_uri=(root / code_uri).resolve(),
        handler=handler,
        runtime=str(resolver.resolve(props.get("Runtime", ""))),
        timeout=int(resolver.resolve(props.get("Timeout", 3))),
        memory_size=int(resolver.resolve(props.get("MemorySize", 128))),
        environment=environment,
        routes=tuple(routes),
        schedules=tuple(schedules),
        rules=tuple(rules),
        streams=tuple(streams),
    )


def _stream(function_id: str, event_id: str, props: Mapping[str, Any], resolver: Resolver) -> StreamSource:
    stream = props.get("Stream")
    target = stream.get("Fn::GetAtt") if isinstance(stream, dict) else None
    if not (isinstance(target, list) and len(target) == 2 and target[1] == "StreamArn"):
        raise TemplateError(f"{function_id}.{event_id}: Stream must be !GetAtt <Table>.StreamArn locally")
    filters = ((props.get("FilterCriteria") or {}).get("Filters")) or []
    patterns = tuple(json.loads(str(resolver.resolve(f["Pattern"]))) for f in filters)
    return StreamSource(
        event_id=event_id,
        table=str(target[0]),
        batch_size=int(resolver.resolve(props.get("BatchSize", 100))),
        filters=patterns,
        max_retries=int(resolver.resolve(props.get("MaximumRetryAttempts", -1))),
    )


def _route(
    function_id: str, event_id: str, props: Mapping[str, Any], resolver: Resolver, apis: Mapping[str, HttpApi]
) -> HttpRoute:
    api_id = _api_logical_id(props.get("ApiId"))
    if api_id not in apis:
        raise TemplateError(f"{function_id}.{event_id}: ApiId {api_id!r} is not an AWS::Serverless::HttpApi")
    api = apis[api_id]
    method = props.get("Method")
    path = props.get("Path")
    if method is None and path is None:
        method, path = "ANY", DEFAULT_ROUTE
    method = str(resolver.resolve(method or "ANY")).upper()
    path = str(resolver.resolve(path))
    if method == "X-AMAZON-APIGATEWAY-ANY-METHOD":
        method = "ANY"
    auth: Mapping[str, Any] = props.get("Auth") or {}
    name = auth.get("Authorizer", api.default_authorizer)
    authorizer = None if name in (None, "NONE") else str(name)
    if (
        authorizer is not None
        and authorizer not in api.authorizers
        and authorizer not in api.unsupported_authorizers
    ):
        raise TemplateError(f"{function_id}.{event_id}: authorizer {authorizer!r} is not defined on {api_id}")
    scopes: tuple[str, ...] = ()
    if authorizer is not None:
        given = auth.get("AuthorizationScopes")
        if given is not None:
            scopes = tuple(str(s) for s in resolver.resolve(given))
        elif authorizer in api.authorizers:
            scopes = api.authorizers[authorizer].default_scopes
    return HttpRoute(
        event_id=event_id,
        api=api_id,
        method=method,
        path=path,
        authorizer=authorizer,
        scopes=scopes,
        payload_format=str(resolver.resolve(props.get("PayloadFormatVersion", "2.0"))),
    )


def _schedule(event_id: str, kind: str, props: Mapping[str, Any], resolver: Resolver) -> Schedule:
    expression = props.get("Schedule") if kind == "Schedule" else props.get("ScheduleExpression")
    enabled = resolver.resolve(props.get("Enabled", True))
    state = resolver.resolve(props.get("State"))
    if state is not None:
        enabled = str(state).upper() == "ENABLED"
    raw_input = resolver.resolve(props.get("Input"))
    return Schedule(
        event_id=event_id,
        kind=kind,
        expression=str(resolver.resolve(expression)),
        enabled=bool(enabled),
        input=None if raw_input is None else str(raw_input),
    )


def _rule(function_id: str, event_id: str, props: Mapping[str, Any], resolver: Resolver) -> EventRule:
    bus = str(resolver.resolve(props.get("EventBusName", "default")))
    if bus.startswith("arn:"):
        bus = bus.rsplit("/", 1)[-1]
    retry: Mapping[str, Any] = resolver.resolve(props.get("RetryPolicy") or {})
    dlq: Mapping[str, Any] = props.get("DeadLetterConfig") or {}
    dlq_logical_id: str | None = None
    dlq_arn: str | None = None
    if dlq.get("Type") == "SQS":
        dlq_logical_id = str(dlq.get("QueueLogicalId") or f"{function_id}{event_id}Queue")
        dlq_arn = resolver.get_att(dlq_logical_id, "Arn")
    elif "Arn" in dlq:
        arn = dlq["Arn"]
        if isinstance(arn, dict) and "Fn::GetAtt" in arn:
            target = arn["Fn::GetAtt"]
            dlq_logical_id = str(target[0] if isinstance(target, list) else str(target).split(".", 1)[0])
        dlq_arn = str(resolver.resolve(arn))
    state = resolver.resolve(props.get("State"))
    raw_input = resolver.resolve(props.get("Input"))
    input_path = resolver.resolve(props.get("InputPath"))
    return EventRule(
        event_id=event_id,
        rule_name=f"{resolver.stack_name}-{function_id}{event_id}",
        bus_name=bus,
        pattern=resolver.resolve(props.get("Pattern") or {}),
        maximum_retry_attempts=_optional_int(retry.get("MaximumRetryAttempts")),
        maximum_event_age_seconds=_optional_int(retry.get("MaximumEventAgeInSeconds")),
        dlq_arn=dlq_arn,
        dlq_logical_id=dlq_logical_id,
        input=None if raw_input is None else str(raw_input),
        input_path=None if input_path is None else str(input_path),
        enabled=state is None or str(state).upper() == "ENABLED",
    )


def _optional_int(value: Any) -> int | None:
    return None if value is None else int(value)
