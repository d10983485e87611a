"""docs/configuration.md is generated from the option table compiled into
the binary (scripts/gen-config-doc.sh); this fails when they drift."""

import os
import subprocess

from conduit_harness import conduit_bin

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")


def test_configuration_reference_is_current():
    ref = subprocess.run([conduit_bin(), "--print-config-reference"], check=True,
                         capture_output=True, text=True, timeout=10).stdout
    with open(os.path.join(ROOT, "docs", "configuration.md"), encoding="utf-8") as f:
        doc = f.read()
    assert ref.strip() and ref in doc, \
        "docs/configuration.md is out of date: run scripts/gen-config-doc.sh"


def test_every_option_is_documented_once():
    ref = subprocess.run([conduit_bin(), "--print-config-reference"], check=True,
                         capture_output=True, text=True, timeout=10).stdout
    rows = [l for l in ref.splitlines() if l.startswith("| ") and "`CONDUIT_" in l]
    envs = [l.split("`")[1] for l in rows]
    assert len(envs) == len(set(envs)) and len(envs) > 20
    for name in ("CONDUIT_LISTEN", "CONDUIT_WORKERS", "CONDUIT_WS_MAX_MESSAGE_SIZE",
                 "CONDUIT_WS_HEARTBEAT_INTERVAL", "CONDUIT_WS_HEARTBEAT_TIMEOUT",
                 "CONDUIT_HANDSHAKE_TIMEOUT", "CONDUIT_AUTH_MODE", "CONDUIT_LOG_LEVEL",
                 "CONDUIT_WS_MAX_SUBSCRIPTIONS_PER_CONNECTION",
                 "CONDUIT_WS_MAX_SUBSCRIBERS_PER_CHANNEL", "CONDUIT_WS_MAX_QUEUE_BYTES",
                 "CONDUIT_WS_MAX_QUEUE_MESSAGES"):
        assert name in envs, name
