#!/usr/bin/env bash
# Starts or stops the local AWS emulator (ministack) on 127.0.0.1:$PBS_EMULATOR_PORT.
#   infra/emulator.sh start | stop | status
set -euo pipefail
source "$(dirname "$0")/env.sh"

dir="$PBS_STATE/emulator-$PBS_EMULATOR_PORT"
pidfile="$dir/pid"

healthy() { curl -fsS -m 2 "$PBS_EMULATOR_URL/_ministack/health" >/dev/null 2>&1; }

case "${1:-}" in
  start)
    if healthy; then
      echo "emulator already running at $PBS_EMULATOR_URL" >&2
      exit 0
    fi
    # The emulator unpacks each deployed function's code under its temporary folder, one copy
    # per deployment, and never removes them: keep that folder inside $dir so each start clears
    # what the previous run left.
    rm -rf "$dir" && mkdir -p "$dir/tmp"
    # Lambdas run as child processes and inherit this environment; AWS_ENDPOINT_URL makes them
    # call back to this emulator (or to PBS_FUNCTIONS_ENDPOINT_URL: the benchmark's counting
    # proxy in front of it). AUTH=true: IAM is enforced (SigV4 checked, identity and
    # resource policies evaluated) for every caller but the account root (the key `test`, which
    # the scripts, the functions and the tests' own clients use): an executor given the access
    # keys of an IAM user holding its pool's policy gets exactly what that policy allows. The emulator leads its own process group (setsid), recorded in
    # the pid file, so `stop` ends it and every Lambda process it started.
    (
      cd "$dir"
      TMPDIR="$dir/tmp" AUTH="${PBS_EMULATOR_AUTH:-true}" BIND_HOST=127.0.0.1 GATEWAY_PORT="$PBS_EMULATOR_PORT" \
        AWS_ENDPOINT_URL="${PBS_FUNCTIONS_ENDPOINT_URL:-$PBS_EMULATOR_URL}" \
        setsid bash -c 'echo $$ >"$1"; exec "$2"' _ "$pidfile" "$PBS_TOOLS/bin/ministack" \
        >"$dir/emulator.log" 2>&1 </dev/null &
    )
    for _ in $(seq 1 100); do
      healthy && { echo "emulator ready at $PBS_EMULATOR_URL (log: $dir/emulator.log)" >&2; exit 0; }
      sleep 0.2
    done
    echo "emulator did not become healthy; see $dir/emulator.log" >&2
    tail -20 "$dir/emulator.log" >&2 || true
    exit 1
    ;;
  stop)
    if [ -f "$pidfile" ]; then
      pid=$(cat "$pidfile")
      kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
      for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -KILL -- "-$pid" 2>/dev/null || true
      rm -f "$pidfile"
      echo "emulator stopped" >&2
    fi
    ;;
  status)
    healthy && echo "running at $PBS_EMULATOR_URL" || { echo "not running"; exit 1; }
    ;;
  *)
    echo "usage: $0 start|stop|status" >&2
    exit 2
    ;;
esac
