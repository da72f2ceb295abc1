"""Audits every IAM policy the templates make with parliament, as AWS would see it.

Usage: python infra/policy-lint.py TEMPLATE...

Each policy document (a function's `Policies`, an `AWS::IAM::ManagedPolicy`, an
`AWS::SQS::QueuePolicy`, a role's inline policies) is resolved with sample values for the
intrinsic functions (account 123456789012, region us-east-1, parameters at their defaults or an
example), so ARNs are concrete, then given to parliament. Exits 1 on any finding above LOW,
naming the template, the resource and the statement.

The SQS batch action names (`sqs:SendMessageBatch`, ...) are dropped first: they are not IAM
actions on AWS, where the single action covers a batch; the policies list them for the local
emulator, which authorizes a batch by its own name.
"""

import json
import re
import sys

from cfnlint.decode import decode
from parliament import analyze_policy_string

ACCOUNT, REGION, STACK = "123456789012", "us-east-1", "pbs"
EMULATOR_ONLY_ACTIONS = {"sqs:sendmessagebatch", "sqs:deletemessagebatch", "sqs:changemessagevisibilitybatch"}
# Values for parameters without a default that appear in ARNs.
EXAMPLE_PARAMETERS = {"MainStack": STACK, "Pool": "site-b"}
# Each template is audited at its defaults, with source prefixes named, and with each way the
# source bucket's events can arrive.
VARIANTS = [
    {},
    {"SourcePrefixes": "invoices/,site-b/", "DefaultPoolSourcePrefixes": "invoices/,site-b/"},
    {"SourceEvents": "sns"},
    {"SourceEvents": "eventbridge"},
]
SEVERITIES = ["INFO", "LOW", "MEDIUM", "HIGH", "CRITICAL"]
# Findings reviewed and kept, each with its reason: (resource, issue) -> why.
ACCEPTED = {
    ("StatusFunction.Policies[0]", "PERMISSIONS_MANAGEMENT_ACTIONS"): (
        "sqs:CreateQueue, limited to executors' control queues (<stack>-pool-*-ctl-*), which the "
        "status function makes on an executor's first heartbeat without a queue policy "
        "(lambdas/src/control.rs); parliament counts CreateQueue as permissions management "
        "because a caller could pass a Policy attribute"
    ),
}


class Resolver:
    """Turns the intrinsic functions of one template into sample strings and lists."""

    def __init__(self, template, overrides):
        self.resources = template.get("Resources", {})
        self.conditions = template.get("Conditions", {})
        self.values = {
            "AWS::Partition": "aws",
            "AWS::Region": REGION,
            "AWS::AccountId": ACCOUNT,
            "AWS::StackName": STACK,
            "AWS::URLSuffix": "amazonaws.com",
            "AWS::NoValue": None,
        }
        for name, spec in template.get("Parameters", {}).items():
            default = spec.get("Default")
            self.values[name] = EXAMPLE_PARAMETERS.get(name, default if default is not None else "example")
        self.values.update(overrides)

    def condition(self, node):
        if isinstance(node, str):
            return self.condition(self.conditions[node])
        (key, arg), = node.items()
        if key == "Condition":
            return self.condition(arg)
        if key == "Fn::Equals":
            return self.resolve(arg[0]) == self.resolve(arg[1])
        if key == "Fn::Not":
            return not self.condition(arg[0])
        if key == "Fn::And":
            return all(self.condition(c) for c in arg)
        if key == "Fn::Or":
            return any(self.condition(c) for c in arg)
        raise ValueError(f"condition {node}")

    def ref(self, name):
        if name in self.values:
            return self.values[name]
        kind = self.resources.get(name, {}).get("Type", "")
        # Ref answers an ARN for these, a name (or URL) for the rest.
        if kind in ("AWS::IAM::ManagedPolicy", "AWS::SNS::Topic"):
            return self.arn(name, kind)
        return f"{STACK}-{name}"

    def arn(self, name, kind):
        service = kind.split("::")[1].lower() if "::" in kind else "unknown"
        arns = {
            "sqs": f"arn:aws:sqs:{REGION}:{ACCOUNT}:{STACK}-{name}",
            "s3": f"arn:aws:s3:::{STACK}-{name.lower()}",
            "dynamodb": f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{STACK}-{name}",
            "sns": f"arn:aws:sns:{REGION}:{ACCOUNT}:{STACK}-{name}",
            "iam": f"arn:aws:iam::{ACCOUNT}:{'policy' if 'Policy' in kind else 'role'}/{STACK}-{name}",
            "cognito": f"arn:aws:cognito-idp:{REGION}:{ACCOUNT}:userpool/{REGION}_{name}",
        }
        # SAM's functions: <Name>Role is the role it makes for them.
        if name.endswith("Role") and name not in self.resources:
            return f"arn:aws:iam::{ACCOUNT}:role/{STACK}-{name}"
        return arns.get(service, f"arn:aws:{service}:{REGION}:{ACCOUNT}:{name}")

    def get_att(self, name, attribute):
        kind = self.resources.get(name, {}).get("Type", "")
        if attribute == "Arn":
            return self.arn(name, kind)
        if attribute == "QueueName":
            return f"{STACK}-{name}"
        return f"{STACK}-{name}-{attribute}"

    def sub(self, text, variables):
        def replace(match):
            key = match.group(1)
            if key.startswith("!"):
                return "${" + key[1:] + "}"
            if key in variables:
                return str(variables[key])
            if "." in key:
                name, attribute = key.split(".", 1)
                return str(self.get_att(name, attribute))
            return str(self.ref(key))

        return re.sub(r"\$\{([^}]+)\}", replace, text)

    def resolve(self, node):
        if isinstance(node, list):
            return [v for v in (self.resolve(item) for item in node) if v is not None]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            (key, arg), = node.items()
            if key == "Ref":
                return self.ref(arg)
            if key == "Fn::GetAtt":
                name, attribute = arg if isinstance(arg, list) else arg.split(".", 1)
                return self.get_att(name, attribute)
            if key == "Fn::Sub":
                text, variables = (arg, {}) if isinstance(arg, str) else (arg[0], self.resolve(arg[1]))
                return self.sub(text, variables)
            if key == "Fn::ImportValue":
                # The main stack's exports a pool stack imports: a name, ARN or joined list.
                export = self.resolve(arg)
                if export.endswith("PoolQueueSenders"):
                    return f"arn:aws:iam::{ACCOUNT}:role/{STACK}-TriggerFunctionRole"
                if export.endswith("Arn"):
                    return f"arn:aws:sqs:{REGION}:{ACCOUNT}:{export}"
                return export.lower()
            if key == "Fn::Join":
                return arg[0].join(str(v) for v in self.resolve(arg[1]))
            if key == "Fn::Split":
                return self.resolve(arg[1]).split(arg[0])
            if key == "Fn::Select":
                return self.resolve(arg[1])[int(self.resolve(arg[0]))]
            if key == "Fn::If":
                return self.resolve(arg[1] if self.condition(arg[0]) else arg[2])
        resolved = {k: self.resolve(v) for k, v in node.items()}
        return {k: v for k, v in resolved.items() if v is not None}


def policies(template):
    """(resource, document) for every IAM policy document in the template."""
    for name, resource in template.get("Resources", {}).items():
        kind, props = resource.get("Type"), resource.get("Properties", {})
        if kind == "AWS::Serverless::Function":
            for i, policy in enumerate(props.get("Policies", [])):
                if isinstance(policy, dict) and "Statement" in policy:
                    yield f"{name}.Policies[{i}]", policy
        elif kind in ("AWS::IAM::ManagedPolicy", "AWS::SQS::QueuePolicy", "AWS::SNS::TopicPolicy"):
            yield name, props["PolicyDocument"]
        elif kind == "AWS::IAM::Role":
            for policy in props.get("Policies", []):
                yield f"{name}.{policy.get('PolicyName', '?')}", policy["PolicyDocument"]


def without_emulator_actions(document):
    for statement in document.get("Statement", []):
        actions = statement.get("Action")
        if isinstance(actions, list):
            statement["Action"] = [a for a in actions if a.lower() not in EMULATOR_ONLY_ACTIONS]
    return document


def main(paths):
    failed = 0
    for path in paths:
        template, matches = decode(path)
        if matches:
            print(f"{path}: cannot read: {matches}")
            return 2
        count = 0
        for overrides, (where, document) in ((o, p) for o in VARIANTS for p in policies(template)):
            resolved = without_emulator_actions(Resolver(template, overrides).resolve(document))
            analyzed = analyze_policy_string(json.dumps(resolved), include_community_auditors=True)
            count += 1
            for finding in analyzed.findings:
                severity = getattr(finding, "severity", "") or "MEDIUM"
                above_low = SEVERITIES.index(severity) > SEVERITIES.index("LOW") if severity in SEVERITIES else True
                accepted = ACCEPTED.get((where, finding.issue))
                if accepted:
                    above_low = False
                mark = "FAIL" if above_low else "accepted" if accepted else "note"
                print(f"{mark} {path} {where} {severity} {finding.issue}: {finding.detail} at {finding.location}")
                if accepted:
                    print(f"  because {accepted}")
                failed += above_low
        print(f"{path}: {count} policy documents audited ({len(VARIANTS)} parameter sets)")
    if failed:
        print(f"{failed} finding(s) above LOW")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
