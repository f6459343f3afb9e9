#!/usr/bin/env bash
# Run a command as on a machine FACTOR times slower: a CPU quota of
# (this machine's cores / FACTOR) CPUs for the command and its children
# (Linux cgroup v1 or v2; needs root). How the README's "slow machine" demo
# time was measured where no slower machine was at hand.
#
#   sudo benchmarks/slow_machine.sh 3 make demo
#
# An emulation, not a slower CPU: the quota cuts CPU time, not cache or
# memory bandwidth. Compare the command's own speed figures (the demo prints
# its training steps/s) with a run without the quota, in the same session.
set -euo pipefail

if [[ $# -lt 2 || ! $1 =~ ^[0-9]+([.][0-9]+)?$ ]]; then
    echo "usage: $0 FACTOR COMMAND... (FACTOR > 1, e.g. 3)" >&2
    exit 2
fi
factor=$1
shift
period=100000
# the cores this process may use (nproc alone would follow OMP_NUM_THREADS)
cores=$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)
quota=$(awk -v n="$cores" -v f="$factor" -v p="$period" \
    'BEGIN { if (f <= 1) exit 1; printf "%d", n * p / f }') || {
    echo "$0: FACTOR must be > 1, got $factor" >&2
    exit 2
}
name="harmodt-slow-$$"
group=""
remove_group() {
    # children that outlive the command (a multiprocessing resource tracker,
    # env workers) keep the group busy for a moment after it exits; set
    # before the group's settings are written, so a failed write removes it too
    [[ -n ${group:-} && -d $group ]] || return 0
    for _ in $(seq 100); do
        rmdir "$group" 2>/dev/null && return
        sleep 0.1
    done
    echo "$0: $group still has processes; remove it with rmdir later" >&2
}
trap remove_group EXIT
if [[ -d /sys/fs/cgroup/cpu && -w /sys/fs/cgroup/cpu ]]; then  # cgroup v1
    group=/sys/fs/cgroup/cpu/$name
    mkdir "$group"
    echo "$period" >"$group/cpu.cfs_period_us"
    echo "$quota" >"$group/cpu.cfs_quota_us"
    procs=$group/tasks
elif [[ -w /sys/fs/cgroup/cgroup.subtree_control ]] &&
    grep -qw cpu /sys/fs/cgroup/cgroup.controllers; then  # cgroup v2
    group=/sys/fs/cgroup/$name
    mkdir "$group"
    echo "$quota $period" >"$group/cpu.max"
    procs=$group/cgroup.procs
else
    echo "$0: no writable cgroup cpu controller (run as root on Linux)" >&2
    exit 2
fi
echo "$0: $cores cores / $factor = $quota/$period CPU for: $*" >&2
status=0
(echo "$BASHPID" >"$procs" && exec "$@") || status=$?
exit "$status"
