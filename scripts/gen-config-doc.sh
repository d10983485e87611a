#!/usr/bin/env bash
# Regenerate docs/configuration.md from the option table compiled into the binary.
# Usage: scripts/gen-config-doc.sh [path/to/conduit]
set -euo pipefail
bin=${1:-build/conduit}
{
cat <<'HEAD'
# Configuration

Every option exists in three spellings: a key in the YAML configuration file,
a `CONDUIT_*` environment variable and a `--flag`. Precedence is
**flag > environment > file > default**. This file is generated from the
option table in `src/config.c` by `scripts/gen-config-doc.sh` (a test fails
when it is out of date); edit the table, not this page.

## The configuration file

YAML, read with Debian's libyaml (`libyaml-dev`). YAML was chosen because it
has comments, nests naturally (per-namespace settings come later), and
libyaml is a small, mature C parser in Debian; JSON (jansson) has no
comments, and TOML and INI have no maintained C library in Debian that
handles nesting as well. Conduit gives YAML's scalars its own types (from
the table below), so YAML 1.1 surprises such as `no` turning into a boolean
for a string option cannot happen.

Nested mappings are joined with `_`, so these two files are the same:

```yaml
ws_max_message_size: 1m
ws_heartbeat_interval: 30
```

```yaml
ws:
  max_message_size: 1m
  heartbeat_interval: 30
```

List options take a YAML sequence or a comma-separated string:

```yaml
listen:
  - 127.0.0.1:8080
  - "[::1]:8080"
```

An unknown key or a bad value is an error that names the file, the line and
the key; the server does not start. `conduit --check-config` validates the
file, the environment and the flags together and prints the effective
configuration.

## Environment and flags

The variable is the key in upper case with a `CONDUIT_` prefix
(`ws_max_message_size` → `CONDUIT_WS_MAX_MESSAGE_SIZE`); the flag is the key
with dashes (`--ws-max-message-size 2m` or `--ws-max-message-size=2m`).
Booleans take `true`/`false` (also `yes`/`no`, `on`/`off`, `1`/`0`). Sizes
take `k`, `m`, `g` suffixes (powers of 1024); durations in seconds take `s`,
`m`, `h` suffixes. A list in the environment is comma-separated and replaces
the default; the first `--listen` flag replaces it too, and later ones add.
`CONDUIT_*` variables that name no option are ignored with a warning (a
Kubernetes Service called `conduit` sets `CONDUIT_SERVICE_HOST`, for one).
A bad flag or value exits with status 2 and one line naming it.

## Options

HEAD
"$bin" --print-config-reference
} > docs/configuration.md
