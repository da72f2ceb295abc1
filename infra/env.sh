# Sourced by the dev and infra scripts: project paths, tool PATH, and emulator settings.
# shellcheck shell=bash
PBS_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export PBS_ROOT
export PBS_TOOLS="$PBS_ROOT/.tools"
# State (emulators, stacks, the dev executor) under .state unless PBS_STATE names another folder.
export PBS_STATE="${PBS_STATE:-$PBS_ROOT/.state}"
# cargo-lambda finds zig through the venv's python (package ziglang).
export PATH="$PBS_TOOLS/bin:$PBS_TOOLS/cli/bin:$PATH"
export SAM_CLI_TELEMETRY=0
export PBS_EMULATOR_PORT="${PBS_EMULATOR_PORT:-4566}"
export PBS_EMULATOR_URL="http://127.0.0.1:$PBS_EMULATOR_PORT"
# Credentials and region for the emulator; it accepts any.
export AWS_ACCESS_KEY_ID="${AWS_ACCESS_KEY_ID:-test}"
export AWS_SECRET_ACCESS_KEY="${AWS_SECRET_ACCESS_KEY:-test}"
export AWS_REGION="${AWS_REGION:-us-east-1}"
export AWS_DEFAULT_REGION="$AWS_REGION"
mkdir -p "$PBS_STATE"
