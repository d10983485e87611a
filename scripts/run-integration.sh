#!/usr/bin/env bash
# Run the integration and conformance suites against the real server binary.
#
#   scripts/run-integration.sh [PYTHON]        (make integration passes /usr/bin/python3)
#
# Environment: CONDUIT_BIN (absolute path of build/conduit; default
# $PWD/build/conduit), CONDUIT_SANITIZE (non-empty: sanitizer build, longer
# deadlines, sanitizer reports fail the test).
# Exits with pytest's status; pytest's closing summary is the last line.
set -uo pipefail

PYTHON=${1:-/usr/bin/python3}
cd "$(dirname "$0")/.."
export CONDUIT_BIN=${CONDUIT_BIN:-$PWD/build/conduit}
export PYTHONDONTWRITEBYTECODE=1

node_dir=tests/integration/node
if [ ! -d "$node_dir/node_modules/ws" ]; then
    if command -v npm >/dev/null 2>&1; then
        if [ -f "$node_dir/package-lock.json" ]; then
            npm_cmd=(npm ci)
        else
            npm_cmd=(npm install)
        fi
        if ! (cd "$node_dir" && timeout 300 "${npm_cmd[@]}" --no-audit --no-fund --loglevel=error) >&2; then
            echo "run-integration: '${npm_cmd[*]}' failed in $node_dir; node client tests will be skipped" >&2
        fi
    else
        echo "run-integration: npm not found; node client tests will be skipped" >&2
    fi
fi

if [ ! -x "$CONDUIT_BIN" ]; then
    echo "run-integration: conduit binary not found at $CONDUIT_BIN" >&2
fi

# A hard ceiling so a wedged test can never hang CI (the suite takes minutes).
exec timeout -k 30 1800 "$PYTHON" -m pytest -q -p no:cacheprovider tests/integration tests/conformance
