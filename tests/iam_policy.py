"""A small IAM policy evaluator: the subset of IAM that the project's policies use.

What it models, as AWS documents it (the "policy evaluation logic" and "IAM JSON policy
elements" pages):

- identity policies only, a role being the union of its policy documents: a request is
  allowed if some ``Allow`` statement matches it and no ``Deny`` statement does; otherwise
  it is implicitly denied;
- ``Action`` / ``NotAction``: ``service:Name`` with ``*`` and ``?`` wildcards, matched
  without regard to case;
- ``Resource`` / ``NotResource``: ARNs with ``*`` and ``?``, matched segment by segment
  (``arn:partition:service:region:account:rest``; the last segment may hold colons and
  slashes, which a ``*`` there spans), case-sensitively; ``*`` alone matches anything;
- ``Condition``: the operators ``StringEquals``, ``StringNotEquals``, ``StringLike``,
  ``StringNotLike`` (with ``IfExists``), each with the set qualifiers ``ForAllValues:``
  and ``ForAnyValue:``. Blocks and keys are ANDed, the values of one key ORed (for the
  negated operators: none of them matches). A key missing from the request makes a plain
  condition false (true with ``IfExists``), a ``ForAllValues`` condition true and a
  ``ForAnyValue`` condition false. The request context keys are ``aws:RequestedRegion``
  and those a request carries (``dynamodb:LeadingKeys``, the partition keys of the items
  it reads or writes).

What it does not model: resource-based policies (bucket and queue policies, the default
account-only ones are assumed), permission boundaries, SCPs and session policies;
``Principal``; the other condition operators (numeric, date, Bool, ARN, IP, Null) and
policy variables (``${aws:username}``), which raise :class:`Unsupported` rather than
being guessed at; actions implied by other actions (S3's ``HeadObject`` needs
``s3:GetObject``: :func:`request_of` maps each operation to the actions IAM checks,
for the operations the project calls, and raises ``Unsupported`` for one it does not know).
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

ALLOW = "Allow"
DENY = "Deny"
_OPERATORS = ("StringEquals", "StringNotEquals", "StringLike", "StringNotLike")


class Unsupported(ValueError):
    """A policy or a request uses IAM this evaluator does not model."""


@dataclass(frozen=True)
class Request:
    """One authorisation IAM makes: an action on a resource, with the request's context."""

    action: str  # "dynamodb:PutItem"
    resource: str  # an ARN, or "*" for actions without resources (sts:GetCallerIdentity)
    context: dict[str, list[str]] = field(default_factory=dict)  # condition key -> values

    def __str__(self) -> str:
        keys = self.context.get("dynamodb:LeadingKeys")
        return f"{self.action} on {self.resource}" + (f" keys {keys}" if keys else "")


@dataclass(frozen=True)
class Statement:
    source: str  # "worker-policy.json#LeasesOfBundles"
    effect: str
    actions: tuple[str, ...]
    not_action: bool
    resources: tuple[str, ...]
    not_resource: bool
    condition: dict

    def matches(self, request: Request) -> bool:
        return (self.matches_action(request.action)
                and _any(self.resources, request.resource, _resource_matches) != self.not_resource
                and _condition_holds(self.condition, request.context, self.source))

    def matches_action(self, action: str) -> bool:
        return _any(self.actions, action, _action_matches) != self.not_action


def _listed(value) -> tuple[str, ...]:
    return (value,) if isinstance(value, str) else tuple(value)


def _any(patterns, value: str, match) -> bool:
    return any(match(pattern, value) for pattern in patterns)


def _glob(pattern: str, value: str, case: bool = True) -> bool:
    """IAM's wildcards: ``*`` any run of characters, ``?`` one; nothing else is special."""
    return _compiled(pattern, case).fullmatch(value) is not None


@functools.lru_cache(maxsize=4096)
def _compiled(pattern: str, case: bool) -> re.Pattern:
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.compile(regex, re.DOTALL | (0 if case else re.IGNORECASE))


def _action_matches(pattern: str, action: str) -> bool:
    return _glob(pattern, action, case=False)


def _resource_matches(pattern: str, arn: str) -> bool:
    if pattern == "*":
        return True
    if "${" in pattern:
        raise Unsupported(f"policy variables are not modelled: {pattern}")
    have, want = arn.split(":", 5), pattern.split(":", 5)
    if len(have) != 6 or len(want) != 6:
        return False
    return all(_glob(p, v) for p, v in zip(want, have))


def _condition_holds(condition: dict, context: dict[str, list[str]], source: str) -> bool:
    for operator, keys in condition.items():
        qualifier, _, name = operator.rpartition(":")
        if_exists = name.endswith("IfExists")
        base = name[:-len("IfExists")] if if_exists else name
        if base not in _OPERATORS or qualifier not in ("", "ForAllValues", "ForAnyValue"):
            raise Unsupported(f"{source}: condition operator {operator} is not modelled")
        for key, wanted in keys.items():
            if not _key_holds(qualifier, base, if_exists, _listed(wanted), context.get(key)):
                return False
    return True


def _key_holds(qualifier: str, operator: str, if_exists: bool, wanted: tuple[str, ...],
               values: list[str] | None) -> bool:
    negated = "Not" in operator
    like = operator.endswith("Like")

    def one(value: str) -> bool:  # the value matches one of the wanted (none, if negated)
        found = any(_glob(w, value) if like else w == value for w in wanted)
        return found != negated

    if not values:
        return qualifier == "ForAllValues" or if_exists
    if qualifier == "ForAllValues":
        return all(one(v) for v in values)
    if qualifier == "ForAnyValue":
        return any(one(v) for v in values)
    if len(values) > 1:
        raise Unsupported(f"a multivalued key needs ForAllValues or ForAnyValue: {values}")
    return one(values[0])


@dataclass(frozen=True)
class Policy:
    """The statements of one role's policy documents."""

    statements: tuple[Statement, ...]

    @classmethod
    def load(cls, paths: list[Path], **names: str) -> Policy:
        """The documents at ``paths``, each placeholder NAME in ``names`` (PREFIX, REGION,
        ACCOUNT, as deploy/iam/ writes them) replaced by its value first."""
        statements = []
        for path in paths:
            text = path.read_text(encoding="utf-8")
            for placeholder, value in names.items():
                text = re.sub(rf"\b{placeholder}\b", value, text)
            statements += parse(json.loads(text), path.name)
        return cls(tuple(statements))

    def decide(self, request: Request) -> tuple[bool, list[Statement]]:
        """(allowed, the Allow statements that match it)."""
        matching = [s for s in self.statements if s.matches(request)]
        if any(s.effect == DENY for s in matching):
            return False, []
        allowing = [s for s in matching if s.effect == ALLOW]
        return bool(allowing), allowing

    def grants(self) -> list[tuple[Statement, str, str]]:
        """Every (Allow statement, action, resource) the documents grant (NotAction and
        NotResource statements grant too much to list: :class:`Unsupported`)."""
        if any(s.effect == ALLOW and (s.not_action or s.not_resource) for s in self.statements):
            raise Unsupported("the grants of an Allow with NotAction or NotResource")
        return [(s, a, r) for s in self.statements if s.effect == ALLOW
                for a in s.actions for r in s.resources]


def covers(action: str, resource: str, request: Request) -> bool:
    """True if ``request`` is a use of the grant (``action``, ``resource``) of a statement."""
    return _action_matches(action, request.action) and _resource_matches(resource,
                                                                          request.resource)


def parse(document: dict, name: str) -> list[Statement]:
    statements = document["Statement"]
    statements = [statements] if isinstance(statements, dict) else statements
    parsed = []
    for number, s in enumerate(statements):
        unknown = set(s) - {"Sid", "Effect", "Action", "NotAction", "Resource", "NotResource",
                            "Condition"}
        if unknown:
            raise Unsupported(f"{name}: statement {number}: {sorted(unknown)} not modelled")
        if s["Effect"] not in (ALLOW, DENY):
            raise Unsupported(f"{name}: statement {number}: effect {s['Effect']!r}")
        parsed.append(Statement(
            f"{name}#{s.get('Sid', number)}", s["Effect"],
            _listed(s.get("Action", s.get("NotAction", ()))), "NotAction" in s,
            _listed(s.get("Resource", s.get("NotResource", ()))), "NotResource" in s,
            s.get("Condition", {})))
    return parsed


# ----------------------------------------------------------------- recorded calls -> IAM

# The IAM action a call needs where it is not service:Operation (the batch calls of SQS
# need the single call's action; S3's operations have actions of their own names).
_ACTIONS = {
    ("sqs", "SendMessageBatch"): "sqs:SendMessage",
    ("sqs", "DeleteMessageBatch"): "sqs:DeleteMessage",
    ("sqs", "ChangeMessageVisibilityBatch"): "sqs:ChangeMessageVisibility",
    ("s3", "HeadObject"): "s3:GetObject",
    ("s3", "ListObjectsV2"): "s3:ListBucket",
    ("s3", "ListObjects"): "s3:ListBucket",
    ("s3", "ListObjectVersions"): "s3:ListBucketVersions",
    ("s3", "HeadBucket"): "s3:ListBucket",
    ("s3", "CreateBucket"): "s3:CreateBucket",
    ("s3", "DeleteBucket"): "s3:DeleteBucket",
    ("s3", "PutObject"): "s3:PutObject",
    ("s3", "GetObject"): "s3:GetObject",
    ("s3", "DeleteObject"): "s3:DeleteObject",
    ("s3", "DeleteObjects"): "s3:DeleteObject",
    ("s3", "PutBucketNotificationConfiguration"): "s3:PutBucketNotification",
    ("s3", "GetBucketLifecycleConfiguration"): "s3:GetLifecycleConfiguration",
    ("s3", "PutBucketLifecycleConfiguration"): "s3:PutLifecycleConfiguration",
}
_S3_OBJECT_OPERATIONS = {"PutObject", "GetObject", "HeadObject", "DeleteObject"}
_NO_RESOURCE = {"sts"}  # actions IAM authorises on "*"
# Auto Scaling's Describe* calls have no resource-level permissions either.
_GROUP_ARN = ("arn:aws:autoscaling:{region}:{account}:autoScalingGroup:"
              "00000000-0000-0000-0000-000000000000:autoScalingGroupName/{group}")


def request_of(call: dict, account: str) -> Request:
    """The IAM request of one record of tests/aws_recorder.py."""
    service, op, region = call["service"], call["operation"], call["region"]
    action = _ACTIONS.get((service, op))
    if action is None:
        if service == "s3":
            raise Unsupported(f"the S3 operation {op} has no action here yet: add it")
        action = f"{service}:{op}"
    if service == "s3" and call.get("version"):  # the calls on one version of an object
        action = {"GetObject": "s3:GetObjectVersion", "HeadObject": "s3:GetObjectVersion",
                  "DeleteObjects": "s3:DeleteObjectVersion"}.get(op, action)
    context = {"aws:RequestedRegion": [region]}
    if service in _NO_RESOURCE:
        resource = "*"
    elif service == "sqs":
        resource = f"arn:aws:sqs:{region}:{account}:{call['queue']}"
    elif service == "dynamodb":
        [table] = call["tables"]  # no call of the project spans tables
        resource = f"arn:aws:dynamodb:{region}:{account}:table/{table}"
        context["dynamodb:LeadingKeys"] = call["leading_keys"]
    elif service == "s3":
        # DeleteObjects names its keys in the body, which is not read: any key of the bucket.
        obj = call["object"] if op in _S3_OBJECT_OPERATIONS else "*" if op == "DeleteObjects" \
            else ""
        resource = f"arn:aws:s3:::{call['bucket']}" + (f"/{obj}" if obj else "")
        if "prefix" in call:  # a listing's
            context["s3:prefix"] = [call["prefix"]]
    elif service == "autoscaling":
        group = call.get("group") if not op.startswith("Describe") else ""
        resource = _GROUP_ARN.format(region=region, account=account, group=group) if group \
            else "*"
    elif service == "ssm":
        [name] = call["names"]
        resource = f"arn:aws:ssm:{region}:{account}:parameter/{name.lstrip('/')}"
    else:
        raise Unsupported(f"calls of {service} have no resource here yet: add them")
    return Request(action, resource, context)
