#!/usr/bin/env bash
# scripts/engine.sh — bring up podman as tbench's Docker-compatible container engine.
#
#   source scripts/engine.sh     # sets up the engine AND exports DOCKER_HOST + CONTAINERS_CONF here
#   scripts/engine.sh            # sets up the engine; prints the export lines for eval
#   scripts/engine.sh --stop     # stops the API service this script started (by its pid file)
#
# Idempotent: installs missing Debian packages (one `apt-get update`), writes
# $TBENCH_ENGINE_CONF (default /etc/tbench/containers.conf), starts
# `podman system service --time=0 unix://$TBENCH_ENGINE_SOCK` in the background unless
# the socket already answers /_ping, and waits (bounded) until it does.
#
# Why the containers.conf: on this machine kind (no systemd as PID 1, cgroup v1, a
# low hard RLIMIT_NOFILE) podman's defaults fail with "setrlimit RLIMIT_NOFILE" and
# "cgroups in hybrid mode" errors. The podman CLI and the API service must both see it.
#
# Tunables (environment): TBENCH_ENGINE_SOCK (/run/tbench/podman.sock),
# TBENCH_ENGINE_CONF (/etc/tbench/containers.conf), TBENCH_ENGINE_LOG
# (/tmp/tbench-podman-service.log), TBENCH_ENGINE_WAIT_S (60), TBENCH_SKIP_APT=1.
#
# Written to be sourced: no `set -e`/`set -u` leaks into the caller; all work is in
# functions with local variables; only DOCKER_HOST and CONTAINERS_CONF are exported.

_tbench_engine_log() { printf 'engine.sh: %s\n' "$*" >&2; }

_tbench_engine_apt() {
    # Packages the engine (and the base-image build) need; installed only when missing.
    local want=(podman runc conmon netavark aardvark-dns catatonit uidmap iptables
                debootstrap debian-archive-keyring bubblewrap tmux curl ca-certificates)
    local missing=() p
    for p in "${want[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    [ "${#missing[@]}" -eq 0 ] && return 0
    if [ "${TBENCH_SKIP_APT:-0}" = 1 ]; then
        _tbench_engine_log "missing packages (TBENCH_SKIP_APT=1, not installing): ${missing[*]}"
        return 1
    fi
    if [ "$(id -u)" != 0 ]; then
        _tbench_engine_log "missing packages ${missing[*]} and not root: run 'sudo apt-get install ${missing[*]}'"
        return 1
    fi
    _tbench_engine_log "installing: ${missing[*]}"

    # Only reached when something is missing (a fresh machine): one update, then one install.
    # A failing third-party repo in sources.list must not stop us.
    DEBIAN_FRONTEND=noninteractive timeout 300 apt-get update -qq || _tbench_engine_log "apt-get update reported errors; trying the install anyway"
    DEBIAN_FRONTEND=noninteractive timeout 900 apt-get install -y -qq \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
        "${missing[@]}" >/tmp/tbench-apt-install.log 2>&1 || {
        _tbench_engine_log "apt-get install failed; last lines of /tmp/tbench-apt-install.log:"
        tail -n 20 /tmp/tbench-apt-install.log >&2
        return 1
    }
}

_tbench_engine_write_conf() {
    local conf=$1 tmp
    mkdir -p "$(dirname "$conf")" || return 1
    tmp=$(mktemp "$conf.XXXXXX") || return 1
    cat >"$tmp" <<'CONF'
# Written by tbench scripts/engine.sh — podman settings for machines with no systemd,
# cgroup v1 and a low hard nofile limit. Used via the CONTAINERS_CONF env var.
[containers]
# podman's default raises RLIMIT_NOFILE to 1048576: "setrlimit RLIMIT_NOFILE" errors here.
default_ulimits = []
# No journald here.
log_driver = "k8s-file"

[engine]
# systemd cgroup manager fails: "cgroups in hybrid mode" / no systemd PID 1.
cgroup_manager = "cgroupfs"
runtime = "runc"
events_logger = "file"

[network]
network_backend = "netavark"
CONF
    if [ -f "$conf" ] && cmp -s "$tmp" "$conf"; then rm -f "$tmp"; else mv -f "$tmp" "$conf"; fi
    chmod 0644 "$conf"
    # A bare `podman` in a shell that never sourced this file reads /etc/containers/containers.conf:
    # point it at ours when the machine has none of its own.
    if [ ! -e /etc/containers/containers.conf ] && [ -w /etc/containers ] 2>/dev/null; then
        ln -s "$conf" /etc/containers/containers.conf 2>/dev/null || true
    fi
}

_tbench_engine_ping() {  # $1 = socket path; succeeds when the API answers "OK"
    local out
    [ -S "$1" ] || return 1
    if command -v curl >/dev/null 2>&1; then
        out=$(curl -s --max-time 3 --unix-socket "$1" http://d/_ping 2>/dev/null) || return 1
    else
        out=$(python3 -c '
import socket, sys
s = socket.socket(socket.AF_UNIX); s.settimeout(3); s.connect(sys.argv[1])
s.sendall(b"GET /_ping HTTP/1.0\r\nHost: d\r\n\r\n"); data = b""
while chunk := s.recv(4096): data += chunk
print(data.split(b"\r\n\r\n", 1)[-1].decode())
' "$1" 2>/dev/null) || return 1
    fi
    [ "$out" = OK ]
}

_tbench_engine_start() {
    local sock=$1 conf=$2 logf=$3 wait_s=$4 pidf
    pidf="$(dirname "$sock")/podman-service.pid"
    mkdir -p "$(dirname "$sock")" || return 1
    if _tbench_engine_ping "$sock"; then return 0; fi
    # Serialise concurrent starters (two CI steps, a test and a shell): the loser waits for the winner.
    {
        flock -w "$wait_s" 8 || { _tbench_engine_log "ERROR: could not lock $(dirname "$sock")/engine.lock"; return 1; }
        _tbench_engine_start_locked "$sock" "$conf" "$logf" "$wait_s" "$pidf"
    } 8>"$(dirname "$sock")/engine.lock"
}

_tbench_engine_start_locked() {
    local sock=$1 conf=$2 logf=$3 wait_s=$4 pidf=$5 pid i
    if _tbench_engine_ping "$sock"; then return 0; fi
    pid=$(cat "$pidf" 2>/dev/null || true)
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null \
        && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q 'system service'; then
        _tbench_engine_log "podman service (pid $pid) is running but not answering yet; waiting"
    else
        rm -f "$sock"  # stale socket from a dead service
        _tbench_engine_log "starting podman system service on unix://$sock (log: $logf)"
        # setsid+nohup: survives the calling shell/CI step; no fd to the caller's pipes.
        CONTAINERS_CONF=$conf setsid nohup podman system service --time=0 "unix://$sock" \
            </dev/null >>"$logf" 2>&1 8>&- &
        pid=$!
        echo "$pid" >"$pidf"
        disown "$pid" 2>/dev/null || true
    fi
    for ((i = 0; i < wait_s * 4; i++)); do
        _tbench_engine_ping "$sock" && return 0
        if ! kill -0 "$pid" 2>/dev/null; then
            _tbench_engine_log "ERROR: podman system service exited; last lines of $logf:"
            tail -n 20 "$logf" >&2
            return 1
        fi
        sleep 0.25
    done
    _tbench_engine_log "ERROR: podman API at unix://$sock did not answer /_ping within ${wait_s}s (log: $logf)"
    tail -n 20 "$logf" >&2
    return 1
}

_tbench_engine_version() {  # one line: engine + API version, from the running service
    curl -s --max-time 5 --unix-socket "$1" http://d/version 2>/dev/null | python3 -c '
import json, sys
try:
    d = json.load(sys.stdin)
except ValueError:
    d = {}
names = " ".join(str(c.get("Name", "")) for c in d.get("Components") or []).lower()
name = "podman" if "podman" in names else "docker-compatible engine"
print("tbench engine: %s %s (API %s, %s/%s) at unix://%s" % (
    name, d.get("Version", "?"), d.get("ApiVersion", "?"), d.get("Os", "?"), d.get("Arch", "?"), sys.argv[1]))
' "$1" >&2 || true
}

_tbench_engine_stop() {
    local sock=$1 pidf pid i
    pidf="$(dirname "$sock")/podman-service.pid"
    pid=$(cat "$pidf" 2>/dev/null || true)
    if [ -z "$pid" ] || ! kill -0 "$pid" 2>/dev/null; then
        _tbench_engine_log "no running service from $pidf"; rm -f "$pidf"; return 0
    fi
    kill "$pid"
    for ((i = 0; i < 40; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
    rm -f "$pidf" "$sock"
    _tbench_engine_log "stopped podman service (pid $pid)"
}

_tbench_engine_main() {
    local sock=${TBENCH_ENGINE_SOCK:-/run/tbench/podman.sock}
    local conf=${TBENCH_ENGINE_CONF:-/etc/tbench/containers.conf}
    local logf=${TBENCH_ENGINE_LOG:-/tmp/tbench-podman-service.log}
    local wait_s=${TBENCH_ENGINE_WAIT_S:-60}
    if [ "${1:-}" = --stop ]; then _tbench_engine_stop "$sock"; return; fi
    _tbench_engine_apt || return 1
    _tbench_engine_write_conf "$conf" || { _tbench_engine_log "ERROR: cannot write $conf"; return 1; }
    export CONTAINERS_CONF=$conf
    _tbench_engine_start "$sock" "$conf" "$logf" "$wait_s" || return 1
    export DOCKER_HOST=unix://$sock
    _tbench_engine_version "$sock"
}

_tbench_engine_finish() {  # drop our helper functions from the caller's shell, keep the status
    local rc=$1
    unset -f _tbench_engine_main _tbench_engine_apt _tbench_engine_write_conf _tbench_engine_ping \
        _tbench_engine_start _tbench_engine_start_locked _tbench_engine_version _tbench_engine_stop _tbench_engine_log \
        _tbench_engine_finish
    return "$rc"
}

if [ "${BASH_SOURCE[0]}" != "$0" ]; then
    # Sourced: keep the caller's shell options; report failure through the return code.
    _tbench_engine_main "$@"
    _tbench_engine_finish $?
    return $?
fi
_tbench_engine_main "$@" || exit 1
if [ "${1:-}" != --stop ]; then
    printf 'export CONTAINERS_CONF=%q\nexport DOCKER_HOST=%q\n' "$CONTAINERS_CONF" "$DOCKER_HOST"
fi
