#!/bin/sh
# containerd-shim-contrast-cc-v2 as installed on a DaemonSet node.
#
# containerd runs this on the host for every task of a Contrast pod. The shim itself is
# Python and lives, with its dependencies, in the contrast-node DaemonSet's daemon
# container: enter that container's mount namespace (the daemon records its pid in
# /run/contrast/daemon.pid) and run the shim there. PID, network and IPC namespaces stay
# the host's, and /run/containerd is mounted at the same path in the container, so the
# bundle, FIFOs and addresses containerd hands over mean the same thing on both sides.
#
# The relay (which owns the sockets containerd dials, /run/contrast/ns/*.sock) is no
# container of the DaemonSet: `start` spawns it when none answers. Spawned from here it
# runs in containerd's cgroup (nsenter changes the mount namespace only), so it outlives
# the DaemonSet pod (a rollout, a deletion) and keeps containerd's connections, and
# with them its pods, while the daemon is replaced; it keeps the mount namespace it was
# started in alive, and reaches every later daemon through the host's /run/contrast.
#   CONTRAST_DAEMON_SUPERVISED=1: the kubelet restarts the daemon container; the relay
#     must never start a daemon of its own (it would run in containerd's cgroup).
#   CONTRAST_RELAY_EXIT_IDLE=1: the relay leaves once no containerd connection and no
#     sandbox remain, so a relay of an older image does not stay for ever.
set -eu
export CONTRAST_DAEMON_SUPERVISED=1
export CONTRAST_RELAY_EXIT_IDLE=1
run_dir=${CONTRAST_RUN_DIR:-/run/contrast}
pidfile=$run_dir/daemon.pid
problem=
if ! pid=$(cat "$pidfile" 2>/dev/null); then
    problem="$pidfile is missing: is the contrast-node daemon running?"
else
    case $pid in
        '' | *[!0-9]*) problem="$pidfile does not hold a pid: '$pid'" ;;
        *) [ -d "/proc/$pid" ] || problem="daemon pid $pid (from $pidfile) is not running" ;;
    esac
fi
if [ -n "$problem" ]; then
    # containerd's `delete` while no daemon container runs (it is being restarted or
    # replaced): run the shim in the relay's mount namespace (a daemon container's, as
    # it was when the relay started), where it releases the task from the state files
    # itself. `start` waits for the kubelet's daemon instead: it fails here.
    action=
    for arg in "$@"; do action=$arg; done
    relay=$(cat "$run_dir/relay.pid" 2>/dev/null || true)
    case $action:$relay in
        delete:'' | delete:*[!0-9]*) ;;
        delete:*) [ ! -d "/proc/$relay" ] || { pid=$relay; problem=; } ;;
    esac
fi
if [ -n "$problem" ]; then
    echo "containerd-shim-contrast-cc-v2: $problem" >&2
    exit 1
fi
# The bundle directory (containerd's cwd for us) by its path, after entering: nsenter's
# --wd would open it on the host's side, a directory outside the container's root
# there, where getcwd() fails (ENOENT) and the shim cannot name its bundle.
exec nsenter --target "$pid" --mount -- /bin/sh -c 'cd "$1" && shift && exec "$@"' \
    containerd-shim-contrast-cc-v2 "$PWD" /usr/local/bin/containerd-shim-contrast-cc-v2 "$@"
