"""tests/iam_policy.py, the evaluator the least-privilege test trusts, and what the
project's policies allow for each key shape of the lease table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from iam_policy import Policy, Request, Unsupported, parse, request_of

from cloudkon.model import JOB_ID_PATTERN, bundle_key, job_key
from fleet.provisioner import SETTINGS_KEY

ROOT = Path(__file__).resolve().parent.parent
IAM = ROOT / "deploy" / "iam"
ACCOUNT = "123456789012"
TABLE = f"arn:aws:dynamodb:us-east-1:{ACCOUNT}:table/cloudkon-leases"


def policy(*statements: dict) -> Policy:
    return Policy(tuple(parse({"Statement": list(statements)}, "p.json")))


def allow(action, resource="*", **extra) -> dict:
    return {"Effect": "Allow", "Action": action, "Resource": resource, **extra}


def allowed(p: Policy, action: str, resource: str = "*", **context) -> bool:
    return p.decide(Request(action, resource, {k.replace("__", ":"): v
                                               for k, v in context.items()}))[0]


def test_actions_match_with_wildcards_and_without_regard_to_case():
    p = policy(allow(["s3:Get*", "sqs:Send?essage"]))
    assert allowed(p, "s3:GetObject") and allowed(p, "S3:getobjectversion")
    assert allowed(p, "sqs:SendMessage")
    assert not allowed(p, "s3:PutObject") and not allowed(p, "sqs:SendMessageBatch")
    assert not allowed(policy(allow("s3:GetObject")), "s3:GetObjectVersion")


def test_resources_match_segment_by_segment_and_case_sensitively():
    p = policy(allow("sqs:SendMessage", "arn:aws:sqs:*:*:cloudkon-input"))
    assert allowed(p, "sqs:SendMessage", "arn:aws:sqs:eu-west-1:1:cloudkon-input")
    assert not allowed(p, "sqs:SendMessage", "arn:aws:sqs:eu-west-1:1:cloudkon-input-dlq")
    assert not allowed(p, "sqs:SendMessage", "arn:aws:sqs:eu-west-1:1:Cloudkon-input")
    assert not allowed(p, "sqs:SendMessage", "arn:aws:sns:eu-west-1:1:cloudkon-input")
    prefixed = policy(allow("sqs:GetQueueUrl", "arn:aws:sqs:r:1:cloudkon-input*"))
    assert allowed(prefixed, "sqs:GetQueueUrl", "arn:aws:sqs:r:1:cloudkon-input-dlq")
    # The last segment may hold colons and slashes, which a '*' there spans.
    logs = policy(allow("logs:PutLogEvents", "arn:*:logs:*:*:*"))
    assert allowed(logs, "logs:PutLogEvents", "arn:aws:logs:r:1:log-group:/a/b:log-stream:x")
    objects = policy(allow("s3:GetObject", "arn:aws:s3:::b/workloads/*"))
    assert allowed(objects, "s3:GetObject", "arn:aws:s3:::b/workloads/j/w.txt")
    assert not allowed(objects, "s3:GetObject", "arn:aws:s3:::b/dist/x.whl")
    assert not allowed(objects, "s3:GetObject", "arn:aws:s3:::b")
    assert allowed(policy(allow("s3:GetObject", "arn:aws:s3:::b/?")), "s3:GetObject",
                   "arn:aws:s3:::b/x")
    assert allowed(policy(allow("sts:GetCallerIdentity")), "sts:GetCallerIdentity", "*")


def test_nothing_is_allowed_unless_a_statement_allows_it_and_a_deny_wins():
    assert not allowed(policy(), "s3:GetObject")
    p = policy(allow("s3:*"), {"Effect": "Deny", "Action": "s3:DeleteObject", "Resource": "*"})
    assert allowed(p, "s3:GetObject") and not allowed(p, "s3:DeleteObject")
    every_but = policy({"Effect": "Allow", "NotAction": "s3:Delete*", "Resource": "*"})
    assert allowed(every_but, "sqs:SendMessage") and not allowed(every_but, "s3:DeleteObject")


def test_leading_keys_conditions_on_every_key_of_the_request():
    only_records = policy(allow("dynamodb:PutItem", TABLE, Condition={
        "ForAllValues:StringLike": {"dynamodb:LeadingKeys": ["*#manifest"]}}))
    assert allowed(only_records, "dynamodb:PutItem", TABLE, dynamodb__LeadingKeys=["j#manifest"])
    for key in ("j#0", "j#a2#0", "_worker#w", "_fleet#settings", "j#manifestx"):
        assert not allowed(only_records, "dynamodb:PutItem", TABLE, dynamodb__LeadingKeys=[key])
    # Every key must match (a batch of a record and a lease is refused); no key: vacuous.
    assert not allowed(only_records, "dynamodb:PutItem", TABLE,
                       dynamodb__LeadingKeys=["j#manifest", "j#0"])
    assert allowed(only_records, "dynamodb:PutItem", TABLE)
    never = policy(allow("dynamodb:UpdateItem", TABLE, Condition={
        "ForAllValues:StringNotLike": {"dynamodb:LeadingKeys": ["*#manifest", "_*"]}}))
    assert allowed(never, "dynamodb:UpdateItem", TABLE, dynamodb__LeadingKeys=["j#a2#7"])
    for key in ("j#manifest", "_fleet#settings", "_worker#w"):
        assert not allowed(never, "dynamodb:UpdateItem", TABLE, dynamodb__LeadingKeys=[key])
    anyone = policy(allow("dynamodb:GetItem", TABLE, Condition={
        "ForAnyValue:StringEquals": {"dynamodb:LeadingKeys": ["a", "b"]}}))
    assert allowed(anyone, "dynamodb:GetItem", TABLE, dynamodb__LeadingKeys=["x", "b"])
    assert not allowed(anyone, "dynamodb:GetItem", TABLE, dynamodb__LeadingKeys=["x"])
    assert not allowed(anyone, "dynamodb:GetItem", TABLE)


def test_single_valued_conditions_need_their_key_unless_if_exists():
    region = policy(allow("ec2:RunInstances", Condition={
        "StringEquals": {"aws:RequestedRegion": "us-east-1"}}))
    assert allowed(region, "ec2:RunInstances", aws__RequestedRegion=["us-east-1"])
    assert not allowed(region, "ec2:RunInstances", aws__RequestedRegion=["eu-west-1"])
    assert not allowed(region, "ec2:RunInstances")
    lenient = policy(allow("ec2:RunInstances", Condition={
        "StringEqualsIfExists": {"aws:RequestedRegion": "us-east-1"}}))
    assert allowed(lenient, "ec2:RunInstances")
    listing = policy(allow("s3:ListBucket", "arn:aws:s3:::b", Condition={
        "StringLike": {"s3:prefix": "workloads/*"}}))
    assert allowed(listing, "s3:ListBucket", "arn:aws:s3:::b", s3__prefix=["workloads/j/"])
    assert not allowed(listing, "s3:ListBucket", "arn:aws:s3:::b", s3__prefix=["dist/"])
    assert not allowed(listing, "s3:ListBucket", "arn:aws:s3:::b")


@pytest.mark.parametrize("statement, what", [
    (allow("s3:GetObject", Condition={"NumericLessThan": {"s3:max-keys": "10"}}),
     "NumericLessThan"),
    (allow("s3:GetObject", Principal="*"), "Principal"),
    ({"Effect": "Maybe", "Action": "s3:GetObject", "Resource": "*"}, "Maybe"),
])
def test_what_it_does_not_model_is_refused_not_guessed(statement, what):
    with pytest.raises(Unsupported, match=what):
        policy(statement).decide(Request("s3:GetObject", "*", {"s3:max-keys": ["1"]}))
    with pytest.raises(Unsupported, match="policy variables"):
        policy(allow("s3:GetObject", "arn:aws:s3:::b/${aws:username}/*")).decide(
            Request("s3:GetObject", "arn:aws:s3:::b/x"))


def test_recorded_calls_become_the_requests_iam_authorises():
    def req(**call):
        return request_of({"region": "us-east-1", **call}, ACCOUNT)

    assert req(service="sqs", operation="SendMessageBatch", queue="p-input") == Request(
        "sqs:SendMessage", f"arn:aws:sqs:us-east-1:{ACCOUNT}:p-input",
        {"aws:RequestedRegion": ["us-east-1"]})
    put = req(service="dynamodb", operation="PutItem", tables=["p-leases"],
              leading_keys=["j#manifest"])
    assert (put.action, put.resource, put.context["dynamodb:LeadingKeys"]) == (
        "dynamodb:PutItem", f"arn:aws:dynamodb:us-east-1:{ACCOUNT}:table/p-leases",
        ["j#manifest"])
    s3 = {"service": "s3", "bucket": "b", "object": "workloads/j/w.txt", "version": False}
    assert req(**s3, operation="HeadObject").action == "s3:GetObject"
    assert req(**{**s3, "version": True}, operation="GetObject").action == "s3:GetObjectVersion"
    assert req(**s3, operation="PutObject").resource == "arn:aws:s3:::b/workloads/j/w.txt"
    listing = req(**{**s3, "object": ""}, operation="ListObjectsV2", prefix="workloads/j/")
    assert (listing.action, listing.resource, listing.context["s3:prefix"]) == (
        "s3:ListBucket", "arn:aws:s3:::b", ["workloads/j/"])
    emptying = req(**{**s3, "object": "", "version": True}, operation="DeleteObjects")
    assert (emptying.action, emptying.resource) == ("s3:DeleteObjectVersion", "arn:aws:s3:::b/*")
    assert req(service="sts", operation="GetCallerIdentity").resource == "*"
    with pytest.raises(Unsupported, match="PutBucketAcl"):
        req(**s3, operation="PutBucketAcl")


def _deployed(*files: str) -> Policy:
    return Policy.load([IAM / f if "/" not in f else ROOT / f for f in files],
                       PREFIX="cloudkon", REGION="us-east-1", ACCOUNT=ACCOUNT)


@pytest.mark.parametrize("path", sorted(IAM.glob("*-policy.json"))
                         + [ROOT / ".chalice" / "policy-dev.json"], ids=lambda p: p.name)
def test_every_policy_of_the_project_is_within_what_the_evaluator_models(path):
    document = json.loads(path.read_text())
    if any("Principal" in s for s in document["Statement"]):
        return  # a trust policy: who may assume the role, not what it may do
    assert Policy.load([path], PREFIX="cloudkon", REGION="us-east-1", ACCOUNT=ACCOUNT).grants()


ROLE_POLICIES = (_deployed("client-policy.json"), _deployed(".chalice/policy-dev.json"),
                 _deployed("worker-policy.json"))
JOB_IDS = st.from_regex(JOB_ID_PATTERN, fullmatch=True)


@settings(max_examples=100, deadline=None)
@given(job_id=JOB_IDS, seq=st.integers(0, 10**6), attempt=st.integers(1, 10**3),
       worker=st.text(min_size=1, max_size=40))
def test_each_role_writes_only_its_own_key_shapes(job_id, seq, attempt, worker):
    """Whatever the job id: the client and the Lambda write job records, never a lease, a
    worker record or the fleet's settings (the Lambda: those too); a worker writes leases
    and its registry record, never a job record or the fleet's settings."""
    client, splitter, worker_role = ROLE_POLICIES
    record, lease, registry = job_key(job_id), bundle_key(job_id, seq, attempt), \
        f"_worker#{worker}"

    def may(p: Policy, action: str, key: str) -> bool:
        return p.decide(Request(f"dynamodb:{action}", TABLE,
                                {"dynamodb:LeadingKeys": [key]}))[0]

    for action in ("PutItem", "UpdateItem"):
        assert may(client, action, record) and may(splitter, action, record)
        for key in (lease, registry, SETTINGS_KEY):
            assert not may(client, action, key)
        for key in (lease, registry):
            assert not may(splitter, action, key)
        assert not may(worker_role, action, record)
        assert not may(worker_role, action, SETTINGS_KEY)
    assert may(splitter, "PutItem", SETTINGS_KEY)
    assert may(worker_role, "UpdateItem", lease) and not may(worker_role, "PutItem", lease)
    assert may(worker_role, "PutItem", registry) and may(worker_role, "DeleteItem", registry)
    for p in (client, splitter, worker_role):
        assert not may(p, "DeleteItem", record) and not may(p, "DeleteItem", lease)


def _signed(key: str, service: str, **environ) -> dict:
    auth = f"AWS4-HMAC-SHA256 Credential={key}/20260101/us-east-1/{service}/aws4_request, x"
    return {"HTTP_AUTHORIZATION": auth, "REQUEST_METHOD": "POST", "PATH_INFO": "/",
            "QUERY_STRING": "", **environ}


def test_the_recorder_names_caller_operation_and_resource_of_each_request():
    from aws_recorder import describe

    batch = json.dumps({"RequestItems": {"p-leases": {"Keys": [{"pk": {"S": "j#0"}},
                                                               {"pk": {"S": "j#a2#1"}}]}}})
    assert describe(_signed("client-a", "dynamodb",
                            HTTP_X_AMZ_TARGET="DynamoDB_20120810.BatchGetItem"),
                    batch.encode()) == {
        "key": "client-a", "region": "us-east-1", "service": "dynamodb",
        "operation": "BatchGetItem", "tables": ["p-leases"], "leading_keys": ["j#0", "j#a2#1"]}
    send = describe(_signed("worker-w", "sqs", HTTP_X_AMZ_TARGET="AmazonSQS.SendMessageBatch"),
                    b'{"QueueUrl": "http://127.0.0.1:5/123456789012/p-output"}')
    assert (send["key"], send["operation"], send["queue"]) == ("worker-w", "SendMessageBatch",
                                                                "p-output")
    listing = describe(_signed("client-a", "s3", REQUEST_METHOD="GET", PATH_INFO="/b",
                               QUERY_STRING="list-type=2&prefix=workloads%2Fj%2F"), b"")
    assert (listing["operation"], listing["bucket"], listing["prefix"]) == (
        "ListObjectsV2", "b", "workloads/j/")
    versions = describe(_signed("setup-s", "s3", REQUEST_METHOD="GET", PATH_INFO="/b",
                                QUERY_STRING="versions="), b"")
    assert versions["operation"] == "ListObjectVersions"
    emptying = describe(_signed("setup-s", "s3", PATH_INFO="/b", QUERY_STRING="delete="),
                        b"<Delete><Object><Key>k</Key><VersionId>v1</VersionId></Object></Delete>")
    assert (emptying["operation"], emptying["version"]) == ("DeleteObjects", True)
    presigned = describe({"REQUEST_METHOD": "GET", "PATH_INFO": "/b/workloads/j/w.txt",
                          "QUERY_STRING": "X-Amz-Credential=client-a%2F20260101%2Fus-east-1"
                                          "%2Fs3%2Faws4_request&X-Amz-Signature=x"}, b"")
    assert (presigned["key"], presigned["operation"], presigned["object"]) == (
        "client-a", "GetObject", "workloads/j/w.txt")
    # Unsigned: a key no role has, which the check refuses.
    assert describe({"REQUEST_METHOD": "PUT", "PATH_INFO": "/b/k"}, b"")["key"] == "-"
