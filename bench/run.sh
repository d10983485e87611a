#!/usr/bin/env bash
# bench/run.sh - `make bench`: Conduit beside npm `ws` and Debian's
# libwebsockets, the same loads against each, in one run.
#
# For each load the servers run in turn, A/B/A/B: conduit, ws, lws,
# conduit-w2, then again, BENCH_ROUNDS times.  Every run starts a fresh
# server.  A server under test is pinned to core 0 (conduit --workers 1;
# node is single-threaded; lws has one service thread) and conduit-bench to
# core 1.  "conduit-w2" is the scaling line: conduit --workers 2 with neither
# it nor the load generator pinned, so they share both cores.
#
# Writes bench/results/<timestamp>.json (every run, raw), bench/results/
# latest.md and the generated part of docs/performance.md.
#
# Knobs (environment): BENCH_ROUNDS (2), BENCH_DURATION (5 s measured),
# BENCH_WARMUP (1 s), BENCH_SERVERS ("conduit ws lws conduit-w2"),
# BENCH_LOADS (all, in the order below), BENCH_PORT (18080, uses 4 ports),
# BENCH_LWS_LOOP (ev: lws on Debian's libev plugin; poll: lws's default),
# BENCH_LWS_BUFFER (0: lws's default buffers; e.g. 65536: bigger reads and
# per-connection receive buffers, faster at 16 KiB, 64 KiB more per idle
# connection),
# BENCH_NO_DOCS=1 (leave docs/performance.md alone), BENCH_QUIET_BUDGET (90 s
# of waiting for other work to stop), BENCH_RETRY_BUDGET (6 reruns of runs
# that other work disturbed).
set -uo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
T0=$(date +%s)

ROUNDS=${BENCH_ROUNDS:-2}
DUR=${BENCH_DURATION:-5}
WARM=${BENCH_WARMUP:-1}
SERVERS=${BENCH_SERVERS:-conduit ws lws conduit-w2}
ALL_LOADS="echo-16 echo-512 echo-16k latency fanout-1k fanout-10k idle connect"
LOADS=${BENCH_LOADS:-$ALL_LOADS}
PORT0=${BENCH_PORT:-18080}
LWS_LOOP=${BENCH_LWS_LOOP:-ev}
LWS_BUFFER=${BENCH_LWS_BUFFER:-0}
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3

OUT=build/bench
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
RUNDIR=$OUT/runs-$STAMP
mkdir -p "$RUNDIR" bench/results
# keep the logs of the last five runs only
ls -1d "$OUT"/runs-* 2>/dev/null | head -n -5 | xargs -r rm -rf
cat /proc/loadavg >"$RUNDIR/loadavg.start"

say() { printf '[bench %4ds] %s\n' "$(( $(date +%s) - T0 ))" "$*" >&2; }
die() { say "error: $*"; exit 1; }

# ---------------------------------------------------------------------------
# What the suite needs, installed only when missing.
# ---------------------------------------------------------------------------
sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"
apt_missing=()
command -v taskset >/dev/null || apt_missing+=(util-linux)
command -v ss >/dev/null || apt_missing+=(iproute2)
command -v node >/dev/null || apt_missing+=(nodejs)
command -v npm >/dev/null || apt_missing+=(npm)
[ -x /usr/bin/python3 ] || command -v python3 >/dev/null || apt_missing+=(python3)
command -v pkg-config >/dev/null || apt_missing+=(pkg-config)
pkg-config --exists libwebsockets 2>/dev/null || apt_missing+=(libwebsockets-dev)
if [ ${#apt_missing[@]} -gt 0 ]; then
    say "installing Debian packages: ${apt_missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -qq || die "apt-get update failed"
    $sudo apt-get install -y -qq --no-install-recommends "${apt_missing[@]}" >/dev/null \
        || die "apt-get install ${apt_missing[*]} failed"
fi
[ -x "$PY" ] || PY=python3

if [ ! -f bench/node_modules/ws/package.json ] || [ ! -f bench/node_modules/bufferutil/package.json ]; then
    say "npm ci (ws, bufferutil) into bench/node_modules"
    (cd bench && npm ci --no-audit --no-fund --loglevel=error) || die "npm ci failed"
fi
(cd bench && node -e "require('bufferutil')") 2>/dev/null || die "bufferutil does not load"

say "compiling bench/peers/lws_server.c"
cc -O2 -Wall -Wextra -o "$OUT/lws_server" bench/peers/lws_server.c \
    $(pkg-config --cflags --libs libwebsockets) || die "lws_server does not compile"

# Freeze the binaries under test: build/conduit may be rebuilt while we run.
[ -x build/conduit ] && [ -x build/conduit-bench ] || die "run make all first"
cp build/conduit "$OUT/conduit.bin" && cp build/conduit-bench "$OUT/conduit-bench.bin" \
    || die "cannot copy the binaries"
# the source the copy was built from, for the report
{ git rev-parse --short HEAD 2>/dev/null || echo "?"
  git status --porcelain -- src include tools 2>/dev/null | head -1; } >"$RUNDIR/git"
CONDUIT=$ROOT/$OUT/conduit.bin
CB=$ROOT/$OUT/conduit-bench.bin
"$CONDUIT" --version >/dev/null 2>&1 || die "build/conduit does not run (half-built? rerun)"

# ---------------------------------------------------------------------------
# File limits: the idle load holds 19,000 connections in one server process.
# ---------------------------------------------------------------------------
hard=$(ulimit -Hn)
if [ "$hard" != unlimited ] && [ "$hard" -lt 20000 ]; then
    ulimit -Hn 20000 2>/dev/null && hard=20000
fi
ulimit -n "$hard" 2>/dev/null || true
soft=$(ulimit -n)
IDLE_CONNS=19000
if [ "$soft" != unlimited ] && [ $((soft - 500)) -lt $IDLE_CONNS ]; then
    IDLE_CONNS=$((soft - 500))
    say "open-file limit is $soft: the idle load holds $IDLE_CONNS connections"
fi

# ---------------------------------------------------------------------------
# Servers
# ---------------------------------------------------------------------------
conduit_flags=(--log-level warn --ws-presence false --ws-compression false
    --ws-max-queue-messages 1000000 --ws-max-queue-bytes 1g)
# Limits that would stop a benchmark, switched off where this build has them
# (0 is unlimited for each; heartbeats stay at their defaults: 30 s, longer
# than any run).
ref=$("$CONDUIT" --print-config-reference 2>/dev/null || true)
has() { grep -q -- "\`--$1\`" <<<"$ref"; }
has data-dir && conduit_flags+=(--data-dir "$ROOT/$OUT/conduit-data")
has ws-max-connections-per-ip && conduit_flags+=(--ws-max-connections-per-ip 0)
has ws-max-connections-per-user && conduit_flags+=(--ws-max-connections-per-user 0)
has ws-max-pending-handshakes-per-ip && conduit_flags+=(--ws-max-pending-handshakes-per-ip 0)
has ws-message-rate-limit && conduit_flags+=(--ws-message-rate-limit 0)
if grep -q -- '--check-config' < <("$CONDUIT" --help 2>&1); then
    "$CONDUIT" "${conduit_flags[@]}" --check-config >/dev/null 2>"$RUNDIR/check-config.log" \
        || die "conduit rejects the bench flags: $(head -3 "$RUNDIR/check-config.log")"
fi

port_of() {
    case $1 in conduit) echo $PORT0 ;; ws) echo $((PORT0 + 1)) ;;
    lws) echo $((PORT0 + 2)) ;; conduit-w2) echo $((PORT0 + 3)) ;; esac
}
server_cmd() { # name port -> the command line, one word a line
    case $1 in
    conduit) printf '%s\n' taskset -c 0 "$CONDUIT" --workers 1 --listen "127.0.0.1:$2" "${conduit_flags[@]}" ;;
    conduit-w2) printf '%s\n' "$CONDUIT" --workers 2 --listen "127.0.0.1:$2" "${conduit_flags[@]}" ;;
    ws) printf '%s\n' taskset -c 0 node "$ROOT/bench/peers/ws_server.mjs" "$2" ;;
    lws) printf '%s\n' taskset -c 0 "$ROOT/$OUT/lws_server" "$2" "$LWS_LOOP" "$LWS_BUFFER" ;;
    *) return 1 ;;
    esac
}
for s in $SERVERS; do server_cmd "$s" 1 >/dev/null || die "unknown server $s"; done
for l in $LOADS; do grep -qw -- "$l" <<<"$ALL_LOADS" || die "unknown load $l"; done

listening() { ss -ltnH "sport = :$1" 2>/dev/null | grep -q LISTEN; }
for s in $SERVERS; do
    p=$(port_of "$s")
    listening "$p" && die "port $p is in use (set BENCH_PORT)"
done

SPID=""
SAMPLER=""
start_server() { # name port log
    local -a cmd
    mapfile -t cmd < <(server_cmd "$1" "$2")
    "${cmd[@]}" >"$3" 2>&1 &
    SPID=$!
    local i
    for i in $(seq 1 100); do
        listening "$2" && return 0
        kill -0 "$SPID" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}
stop_server() {
    [ -n "$SPID" ] || return 0
    kill -TERM "$SPID" 2>/dev/null
    local i
    for i in $(seq 1 30); do kill -0 "$SPID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$SPID" 2>/dev/null
    wait "$SPID" 2>/dev/null
    SPID=""
}
# The server's CPU time twice a second, to tell a saturated server from a
# load generator that could not saturate it.
start_sampler() { # pid file
    (
        tck=$(getconf CLK_TCK)
        while kill -0 "$1" 2>/dev/null; do
            read -r st </proc/"$1"/stat 2>/dev/null || break
            st=${st##*) }
            set -- "$1" $st
            # after "pid (comm) ": field 14 (utime) is word 12+1, 15 is 13+1
            echo "$(date +%s.%N) $(( ${13} + ${14} )) $tck"
            set -- "$1"
            sleep 0.5
        done
    ) >"$2" 2>/dev/null &
    SAMPLER=$!
}
# Kernel memory of idle sockets: slab growth once the idle load has all its
# connections open (both ends are on this machine, so twice the sockets).
kmem_probe() { # connections file
    local base_in slab0 now slab i
    base_in=$(awk '/^TCP:/{print $3}' /proc/net/sockstat)
    slab0=$(awk '/^Slab:/{print $2}' /proc/meminfo)
    for i in $(seq 1 300); do
        now=$(awk '/^TCP:/{print $3}' /proc/net/sockstat)
        if [ $((now - base_in)) -ge $((2 * $1)) ]; then
            sleep 0.3
            slab=$(awk '/^Slab:/{print $2}' /proc/meminfo)
            now=$(awk '/^TCP:/{print $3}' /proc/net/sockstat)
            echo "$base_in $slab0 $now $slab" >"$2"
            return
        fi
        sleep 0.1
    done
}
stop_sampler() { [ -n "$SAMPLER" ] && kill "$SAMPLER" 2>/dev/null; wait "$SAMPLER" 2>/dev/null; SAMPLER=""; }
cleanup() { stop_sampler; stop_server; }
trap 'cleanup; exit 130' INT TERM
trap cleanup EXIT

load_args() { # load port server-pid -> conduit-bench arguments, one a line
    local u="ws://127.0.0.1:$2"
    case $1 in
    echo-16) printf '%s\n' echo --url "$u/echo" --connections 100 --inflight 16 --size 16 --duration "$DUR" --warmup "$WARM" ;;
    echo-512) printf '%s\n' echo --url "$u/echo" --connections 100 --inflight 16 --size 512 --duration "$DUR" --warmup "$WARM" ;;
    echo-16k) printf '%s\n' echo --url "$u/echo" --connections 100 --inflight 16 --size 16384 --duration "$DUR" --warmup "$WARM" ;;
    latency) printf '%s\n' echo --url "$u/echo" --connections 20 --inflight 1 --size 16 --duration "$DUR" --warmup "$WARM" ;;
    fanout-1k) printf '%s\n' fanout --url "$u" --subscribers 1000 --rate 0 --inflight 64 --source-ips 4 --duration "$DUR" --warmup "$WARM" ;;
    fanout-10k) printf '%s\n' fanout --url "$u" --subscribers 10000 --rate 0 --inflight 32 --source-ips 4 --duration "$DUR" --warmup "$WARM" ;;
    idle) printf '%s\n' idle --url "$u/echo" --connections "$IDLE_CONNS" --processes 2 --source-ips 4 --hold 3 --server-pid "$3" ;;
    connect) printf '%s\n' connect --url "$u/echo" --concurrency 64 --source-ips 4 --duration 3 ;;
    esac
}

# ---------------------------------------------------------------------------
# The runs
# ---------------------------------------------------------------------------
nsrv=$(wc -w <<<"$SERVERS"); nload=$(wc -w <<<"$LOADS")
total=$((nsrv * nload * ROUNDS))
MANIFEST=$RUNDIR/manifest.tsv
: >"$MANIFEST"
say "$total runs: loads [$LOADS] x servers [$SERVERS] x $ROUNDS rounds; ${DUR}s measured + ${WARM}s warm-up each"

# Other work on the machine (a build, a test run) steals the cores the
# comparison depends on.  Before each run wait (within a budget) for the
# machine to be quiet; after it, count the CPU that was neither the server's
# nor ours, and run it again once if that was more than a quarter of a core.
TCK=$(getconf CLK_TCK)
QUIET_BUDGET=${BENCH_QUIET_BUDGET:-90}   # seconds of waiting, whole suite
RETRY_BUDGET=${BENCH_RETRY_BUDGET:-6}     # reruns of disturbed runs, whole suite
busy_ticks() { awk '/^cpu /{print $2+$3+$4+$7+$8+$9}' /proc/stat; }
proc_ticks() { # pid -> utime + stime + cutime + cstime
    local st
    read -r st <"/proc/$1/stat" 2>/dev/null || { echo 0; return; }
    st=${st##*) }
    set -- $st
    echo $(( ${12} + ${13} + ${14} + ${15} ))
}
wait_quiet() {
    local b0 b1 pct waited=0
    while :; do
        b0=$(busy_ticks); sleep 0.5; b1=$(busy_ticks)
        pct=$(( (b1 - b0) * 200 / TCK ))
        [ "$pct" -le 25 ] && break
        [ "$QUIET_BUDGET" -le 0 ] && break
        [ $waited -eq 0 ] && say "  machine busy (${pct}% of a core not ours): waiting"
        sleep 1
        waited=$((waited + 1)); QUIET_BUDGET=$((QUIET_BUDGET - 1))
    done
}

n=0
for load in $LOADS; do
    for round in $(seq 1 "$ROUNDS"); do
        for srv in $SERVERS; do
            n=$((n + 1))
            id=$(printf '%03d' $n)
            port=$(port_of "$srv")
            base=$RUNDIR/$id-$load-$srv-r$round
            attempt=0
            while :; do
                attempt=$((attempt + 1))
                [ -d "$RUNDIR" ] && [ -x "$CB" ] && [ -x "$CONDUIT" ] \
                    || die "$OUT vanished under the suite (make clean?): rerun make bench"
                wait_quiet
                if ! start_server "$srv" "$port" "$base.server.log"; then
                    stop_server
                    if [ $attempt -lt 3 ]; then sleep 1; continue; fi
                    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$id" "$srv" "$load" "$round" 99 1 0 "server did not start" 0 >>"$MANIFEST"
                    say "[$n/$total] $load r$round $srv: server did not start (see $base.server.log)"
                    break
                fi
                mapfile -t args < <(load_args "$load" "$port" "$SPID")
                if [ "$srv" = conduit-w2 ]; then pin=(); else pin=(taskset -c 1); fi
                cmd=("${pin[@]}" "$CB" "${args[@]}" --quiet)
                start_sampler "$SPID" "$base.cpu"
                KPID=""
                if [ "$load" = idle ]; then kmem_probe "$IDLE_CONNS" "$base.kmem" & KPID=$!; fi
                t1=$(date +%s.%N); b0=$(busy_ticks); s0=$(proc_ticks "$SPID"); c0=$(proc_ticks $$)
                timeout -k 5 $((DUR + WARM + 60)) "${cmd[@]}" >"$base.json" 2>"$base.bench.log"
                rc=$?
                [ -n "$KPID" ] && { kill "$KPID" 2>/dev/null; wait "$KPID" 2>/dev/null; }
                stop_sampler
                s1=$(proc_ticks "$SPID"); c1=$(proc_ticks $$); b1=$(busy_ticks); t2=$(date +%s.%N)
                crashed=0
                kill -0 "$SPID" 2>/dev/null || crashed=1
                stop_server
                wall=$(awk "BEGIN{printf \"%.2f\", $t2 - $t1}")
                # CPU that was not the server's, the load generator's or this script's
                foreign=$(awk "BEGIN{f = 100 * (($b1 - $b0) - ($s1 - $s0) - ($c1 - $c0)) / $TCK / $wall; printf \"%.0f\", f < 0 ? 0 : f}")
                summary=$("$PY" bench/report.py --one "$base.json" "$load" 2>/dev/null || echo "no result")
                note=""
                [ "$rc" -ne 0 ] && note=" (exit $rc)"
                [ "$crashed" -eq 1 ] && note="$note (server died)"
                [ "$foreign" -gt 25 ] && note="$note (other work on the machine: ${foreign}% of a core)"
                if [ "$foreign" -gt 25 ] && [ $attempt -lt 2 ] && [ "$RETRY_BUDGET" -gt 0 ]; then
                    RETRY_BUDGET=$((RETRY_BUDGET - 1))
                    say "[$n/$total] $load r$round $srv: $summary$note: running it again"
                    for f in "$base".*; do mv "$f" "${f%.*}.disturbed.${f##*.}"; done
                    continue
                fi
                shown=("${cmd[@]}")
                shown=("${shown[@]/#$ROOT\//}")
                mapfile -t scmd < <(server_cmd "$srv" "$port")
                scmd=("${scmd[@]/#$ROOT\//}")
                printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$id" "$srv" "$load" "$round" "$rc" "$crashed" \
                    "$wall" "${shown[*]}" "$foreign" "${scmd[*]}" >>"$MANIFEST"
                say "[$n/$total] $load r$round $srv: $summary$note"
                break
            done
        done
    done
done

# ---------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------
WALL=$(( $(date +%s) - T0 ))
cat /proc/loadavg >"$RUNDIR/loadavg.end"
report_args=(--rundir "$RUNDIR" --stamp "$STAMP" --wall "$WALL" --rounds "$ROUNDS"
    --duration "$DUR" --warmup "$WARM" --idle-conns "$IDLE_CONNS" --lws-loop "$LWS_LOOP" --lws-buffer "$LWS_BUFFER"
    --conduit-flags "${conduit_flags[*]/#$ROOT\//}" --json "bench/results/$STAMP.json" --md bench/results/latest.md)
[ "${BENCH_NO_DOCS:-0}" = 1 ] || report_args+=(--docs docs/performance.md)
"$PY" bench/report.py "${report_args[@]}" || die "report failed"
say "done in ${WALL}s: bench/results/$STAMP.json, bench/results/latest.md${BENCH_NO_DOCS:+}"
cat bench/results/latest.md
