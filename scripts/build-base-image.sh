#!/usr/bin/env bash
# scripts/build-base-image.sh — build tbench's local task base image (no registry needed).
#
#   scripts/build-base-image.sh            # build localhost/tbench-base:bookworm unless it exists
#   scripts/build-base-image.sh --force    # rebuild (replaces the tag)
#
# debootstrap --variant=minbase bookworm + a few task essentials, the host's CA bundle
# (HTTPS from containers passes a TLS-intercepting egress that only the host trusts),
# then `podman import` with WORKDIR /app, CMD ["/bin/bash"] and CA/PATH/LANG env.
#
# Tunables (environment): TBENCH_BASE_IMAGE (localhost/tbench-base:bookworm),
# TBENCH_DEBIAN_MIRROR (http://deb.debian.org/debian), TBENCH_BASE_EXTRA_PACKAGES
# (comma-separated, added to --include), TBENCH_BASE_TIMEOUT_S (900, for debootstrap).
set -euo pipefail

IMAGE=${TBENCH_BASE_IMAGE:-localhost/tbench-base:bookworm}
SUITE=bookworm
MIRROR=${TBENCH_DEBIAN_MIRROR:-http://deb.debian.org/debian}
DEADLINE=${TBENCH_BASE_TIMEOUT_S:-900}
# Small on purpose: python3 + pytest for verifiers, venv for `python3 -m venv`, procps (ps/kill
# for agents and harness), tmux (Terminal-Bench drives agents through tmux in the container),
# curl, ca-certificates. coreutils (timeout) and util-linux (setsid) are Essential: minbase has them.
INCLUDE=python3,python3-pytest,python3-venv,ca-certificates,procps,tmux,curl
[ -n "${TBENCH_BASE_EXTRA_PACKAGES:-}" ] && INCLUDE+=",${TBENCH_BASE_EXTRA_PACKAGES}"

force=0
for a in "$@"; do
    case $a in
        --force) force=1 ;;
        -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
        *) echo "build-base-image.sh: unknown argument '$a' (use --force or --help)" >&2; exit 2 ;;
    esac
done

log() { printf 'build-base-image.sh: %s\n' "$*" >&2; }

# Same containers.conf (and packages, and running service) as everything else.
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/engine.sh
source "$here/engine.sh" >/dev/null

# One build at a time on this machine.
mkdir -p /run/tbench
exec 9>/run/tbench/build-base-image.lock
flock -w "$DEADLINE" 9 || { log "ERROR: another build holds /run/tbench/build-base-image.lock"; exit 1; }

if [ "$force" = 0 ] && podman image exists "$IMAGE"; then
    log "$IMAGE already present ($(podman image inspect --format '{{.Id}}' "$IMAGE" | cut -c1-12)); reusing (--force rebuilds)"
    exit 0
fi

t0=$(date +%s)
work=$(mktemp -d "${TMPDIR:-/var/tmp}/tbench-base.XXXXXX")
cleanup() {
    # debootstrap mounts proc/sys inside the target: unmount anything left under $work
    # before deleting, and never cross into another file system.
    local m
    awk -v w="$work" 'index($2, w) == 1 {print $2}' /proc/mounts | sort -r | while read -r m; do
        umount -l "$m" 2>/dev/null || true
    done
    rm -rf --one-file-system "$work"
}
trap cleanup EXIT
root=$work/rootfs

log "debootstrap --variant=minbase $SUITE (include: $INCLUDE) from $MIRROR"
if ! timeout --kill-after=30 "$DEADLINE" debootstrap --variant=minbase --include="$INCLUDE" \
        "$SUITE" "$root" "$MIRROR" >"$work/debootstrap.log" 2>&1; then
    log "ERROR: debootstrap failed or ran past ${DEADLINE}s; last lines of its log:"
    tail -n 25 "$work/debootstrap.log" >&2
    tail -n 25 "$root/debootstrap/debootstrap.log" >&2 2>/dev/null || true
    exit 1
fi
t1=$(date +%s)
log "debootstrap done in $((t1 - t0))s"

for tool in timeout setsid python3 pytest tmux curl ps bash; do
    if ! chroot "$root" /bin/sh -c "command -v $tool" >/dev/null 2>&1; then
        log "ERROR: '$tool' missing from the debootstrapped root"; exit 1
    fi
done

# The host's trust store: extra CAs as local certs (so a later update-ca-certificates in a
# derived image keeps them), plus the host bundle itself, verbatim.
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
    cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/"
    chroot "$root" update-ca-certificates >/dev/null 2>&1 || log "warning: update-ca-certificates failed in the image"
fi
if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
    cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
fi

cat >"$root/etc/apt/sources.list" <<SRC
deb $MIRROR $SUITE main
deb $MIRROR $SUITE-updates main
deb http://deb.debian.org/debian-security $SUITE-security main
SRC
mkdir -p "$root/app"
# Small image: no downloaded .debs, no apt lists (run `apt-get update` before installing).
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/debootstrap
find "$root/var/log" -type f -delete 2>/dev/null || true

ca=/etc/ssl/certs/ca-certificates.crt
# Importing onto an existing tag (--force) moves the tag; the old image stays, untagged,
# while images or containers still use it (`podman image prune` clears it later).
tar --numeric-owner -C "$root" -c . | podman import \
    --change 'WORKDIR /app' \
    --change 'CMD ["/bin/bash"]' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change "ENV SSL_CERT_FILE=$ca" \
    --change "ENV REQUESTS_CA_BUNDLE=$ca" \
    --change "ENV CURL_CA_BUNDLE=$ca" \
    --change "ENV PIP_CERT=$ca" \
    --change "ENV NODE_EXTRA_CA_CERTS=$ca" \
    --change 'LABEL org.opencontainers.image.title=tbench-base' \
    --message "tbench base: debootstrap minbase $SUITE + $INCLUDE" \
    --quiet - "$IMAGE" >/dev/null
t2=$(date +%s)
size=$(podman image inspect --format '{{.Size}}' "$IMAGE")
log "built $IMAGE ($((size / 1024 / 1024)) MiB) in $((t2 - t0))s (debootstrap $((t1 - t0))s, import $((t2 - t1))s)"
