#!/usr/bin/env bash
# The project's one entry for a fresh Debian 12 machine (run as root):
#   scripts/dev.sh setup   install Debian packages and the Python environment (.venv)
#   scripts/dev.sh demo    setup, then run a confidential pod end to end (the main job)
#   scripts/dev.sh test    setup, then the whole gate: ruff, mypy, every test tier
# Idempotent: a second setup installs nothing new.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

APT_PACKAGES=(
    python3 python3-venv python3-dev gcc pkg-config libsystemd-dev
    containerd runc crun
    qemu-system-x86 qemu-utils linux-image-amd64 busybox-static
    cryptsetup cryptsetup-bin dmsetup docker-registry skopeo umoci apache2-utils openssl
    mmdebstrap erofs-utils squashfs-tools cpio zstd
    iproute2 iptables systemd kmod e2fsprogs util-linux containernetworking-plugins libc6-dev
)

log() { printf '[dev.sh] %s\n' "$*" >&2; }

setup_apt() {
    local missing=()
    for p in "${APT_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if [ ${#missing[@]} -eq 0 ]; then
        return 0
    fi
    if [ "$(id -u)" -ne 0 ]; then
        log "missing Debian packages (run as root to install): ${missing[*]}"
        exit 1
    fi
    log "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
}

setup_venv() {
    local py=python3
    if [ ! -x .venv/bin/python ]; then
        log "creating .venv"
        "$py" -m venv .venv
    fi
    local stamp=.venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)
    if [ ! -e "$stamp" ]; then
        log "installing Python dependencies into .venv"
        .venv/bin/pip install -q --upgrade pip
        .venv/bin/pip install -q -e '.[dev,systemd]'
        rm -f .venv/.installed-*
        touch "$stamp"
    fi
}

setup() {
    setup_apt
    setup_venv
}

run_tests() {
    local py=.venv/bin/python
    log "ruff"
    "$py" -m ruff check .
    log "mypy (strict)"
    "$py" -m mypy
    log "pytest: every tier"
    local rc=0
    # --durations: every gate log says where its time went (the 90-minute limit).
    "$py" -m pytest -m "" -ra --durations=40 "$@" || rc=$?
    if [ "$rc" -eq 5 ]; then
        log "pytest collected no tests: that is a failure, not a pass"
        exit 1
    fi
    return "$rc"
}

cmd=${1:-}
shift || true
case "$cmd" in
    setup) setup ;;
    demo) setup; exec .venv/bin/python -m agent.demo "$@" ;;
    test) setup; run_tests "$@" ;;
    *) echo "usage: $0 setup|demo|test [args]" >&2; exit 2 ;;
esac
