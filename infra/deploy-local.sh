#!/usr/bin/env bash
# Builds the Lambdas for this host and deploys template.yaml to the local emulator as stack $1;
# writes the stack outputs as JSON to .state/stacks/<stack>.json and prints that path.
#   infra/deploy-local.sh STACK
# PBS_LAMBDA_PROFILE=release builds the functions as they are deployed to AWS (slower to build;
# the benchmark uses it); PBS_LOG_LEVEL sets the stack's LogLevel (default info).
set -euo pipefail
source "$(dirname "$0")/env.sh"
stack=${1:?usage: deploy-local.sh STACK}
cd "$PBS_ROOT"

# The functions run as processes of this host in the emulator, so they are built for the host
# with the workspace's own cargo build (debug by default: it shares the unit tests' dependency
# build, so a rebuild takes seconds) and laid out as `sam build` lays them out: one folder per
# function holding its `bootstrap`, and a copy of the template pointing at them. `sam build`
# itself (cargo-lambda, cross-compiled with zig) is for AWS: `./dev build-aws`.
profile=${PBS_LAMBDA_PROFILE:-debug}
case "$profile" in debug | release) ;; *) echo "PBS_LAMBDA_PROFILE must be debug or release, got $profile" >&2; exit 2 ;; esac
build_dir="$PBS_STATE/functions-$profile"
# The whole workspace, as `./dev` builds it, so the features (and the compiled dependencies) are
# the same; in release only the functions. PBS_DEPLOY_PREBUILT=1 deploys the binaries already
# built (a test deploying a second stack: cargo run from inside a test sees another environment
# and would build again).
if [ "${PBS_DEPLOY_PREBUILT:-0}" = 1 ]; then
  :
elif [ "$profile" = release ]; then
  cargo build --quiet --release -p pbs-lambdas --bins
else
  cargo build --quiet --workspace --all-targets
fi
"$PBS_TOOLS/cli/bin/python" - template.yaml "target/$profile" "$build_dir" <<'PY'
import os, shutil, sys
from samcli.yamlhelper import yaml_dump, yaml_parse
template, binaries, out = sys.argv[1], sys.argv[2], sys.argv[3]
doc = yaml_parse(open(template).read())
shutil.rmtree(out, ignore_errors=True)
os.makedirs(out)
for name, res in doc["Resources"].items():
    meta = res.get("Metadata") or {}
    if meta.get("BuildMethod") != "rust-cargolambda":
        continue
    folder = os.path.join(out, name)
    os.makedirs(folder)
    binary = os.path.join(binaries, meta["BuildProperties"]["Binary"])
    os.link(binary, os.path.join(folder, "bootstrap"))
    res["Properties"]["CodeUri"] = name
    del res["Metadata"]
open(os.path.join(out, "template.yaml"), "w").write(yaml_dump(doc))
PY

export AWS_ENDPOINT_URL="$PBS_EMULATOR_URL"
# The local stack trusts the dev issuer's key (infra/dev-issuer.sh) instead of a Cognito pool, and
# lets webhooks reach receivers on this machine (127.0.0.1), which a stack on AWS refuses. Manual
# jobs may also name objects of buckets named quiet-* (the tests' buckets without notifications).
# PBS_DEPLOY_AUTH=cognito: a stack with the defaults of an AWS deployment instead: it makes its
# Cognito user pool (fetching the pool's keys from the emulator) and refuses webhooks to private
# addresses.
if [ "${PBS_DEPLOY_AUTH:-dev-issuer}" = cognito ]; then
  local_only=("CognitoUrl=$PBS_EMULATOR_URL")
else
  local_only=("AuthJwks='$(bash infra/dev-issuer.sh jwks)'" "AuthIssuer=$(bash infra/dev-issuer.sh issuer)"
        "AuthAudience=$(bash infra/dev-issuer.sh audience)" WebhookAllowPrivateTargets=true)
fi
sam deploy --template-file "$build_dir/template.yaml" --stack-name "$stack" --resolve-s3 \
  --capabilities CAPABILITY_IAM CAPABILITY_AUTO_EXPAND --no-confirm-changeset \
  --no-fail-on-empty-changeset --parameter-overrides Arch=x86_64 "LogLevel=${PBS_LOG_LEVEL:-info}" NotifyBackoffSeconds=1 \
  "ManualJobBuckets=quiet-*" "${local_only[@]}" \
  >"$PBS_STATE/sam-deploy-$stack.log" 2>&1 \
  || { tail -40 "$PBS_STATE/sam-deploy-$stack.log" >&2; exit 1; }

mkdir -p "$PBS_STATE/stacks"
out="$PBS_STATE/stacks/$stack.json"
"$PBS_TOOLS/ministack/bin/python" - "$stack" "$out" <<'PY'
import json, os, sys
import boto3
stack, out = sys.argv[1], sys.argv[2]
cf = boto3.client("cloudformation", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
desc = cf.describe_stacks(StackName=stack)["Stacks"][0]
outputs = {o["OutputKey"]: o["OutputValue"] for o in desc.get("Outputs", [])}
outputs["StackName"] = stack
outputs["DevIssuer"] = os.path.join(os.environ["PBS_ROOT"], "infra", "dev-issuer.sh")
outputs["EmulatorUrl"] = os.environ["AWS_ENDPOINT_URL"]
# The emulator serves API Gateway under /_aws/execute-api/<api-id>/ (path-based addressing).
outputs["LocalApiUrl"] = f"{os.environ['AWS_ENDPOINT_URL']}/_aws/execute-api/{outputs['ApiId']}"
with open(out, "w") as f:
    json.dump(outputs, f, indent=2)
PY
echo "$out"
