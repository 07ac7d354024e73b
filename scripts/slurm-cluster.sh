#!/usr/bin/env bash
# A one-node Slurm cluster on this machine, for heartbench's `slurm` tests and for trying
# `run --executor slurm` without a real cluster. Debian (apt) and root only; no systemd
# needed (facts: Slurm 22.05 from Debian 12, see docs/slurm.md).
#
#   scripts/slurm-cluster.sh up      install if missing, configure, start, wait until idle
#   scripts/slurm-cluster.sh status  one line: the node's state, or why there is none
#   scripts/slurm-cluster.sh down    stop exactly the daemons `up` started (by pid)
#
# `up` writes /etc/slurm/slurm.conf only when it is absent or was written by this script,
# and starts only daemons that are not running already; their pids go to $STATE, which is
# all `down` ever stops. The node gets every CPU and 90 % of the memory of this machine.
set -euo pipefail

STATE=/run/heartbench-slurm/started   # "<daemon> <pid>" per line, for `down`
CONF=/etc/slurm/slurm.conf
MARK="# written by heartbench scripts/slurm-cluster.sh"
NODE=$(hostname -s)
WAIT_S=${SLURM_CLUSTER_WAIT_S:-120}  # ceiling for the node to become idle

die() { echo "slurm-cluster: $*" >&2; exit 2; }
say() { echo "slurm-cluster: $*"; }

alive() {  # alive PID NAME: the process PID exists and runs NAME
    [[ -n "$1" && -r /proc/$1/comm ]] && [[ "$(cat /proc/"$1"/comm 2>/dev/null)" == "$2"* ]]
}

pid_of() {  # the pid in a daemon's pid file, if that daemon is alive
    local file=$1 name=$2 pid
    pid=$(cat "$file" 2>/dev/null || true)
    if alive "$pid" "$name"; then echo "$pid"; fi
}

install() {
    local missing=()
    for exe in munged slurmctld slurmd sbatch; do
        command -v "$exe" >/dev/null || missing+=("$exe")
    done
    [[ ${#missing[@]} -eq 0 ]] && return 0
    command -v apt-get >/dev/null || die "${missing[*]} missing and no apt-get to install them"
    say "installing slurmctld slurmd slurm-client munge (apt)"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -q -o DPkg::Lock::Timeout=600 --no-install-recommends slurmctld slurmd slurm-client munge \
            >/tmp/slurm-cluster-apt.log 2>&1; then
        apt-get update -q >>/tmp/slurm-cluster-apt.log 2>&1 || true
        apt-get install -y -q -o DPkg::Lock::Timeout=600 --no-install-recommends slurmctld slurmd slurm-client munge \
            >>/tmp/slurm-cluster-apt.log 2>&1 || die "apt-get install failed (log: /tmp/slurm-cluster-apt.log)"
    fi
}

write_conf() {
    if [[ -f $CONF ]] && ! grep -qF "$MARK" "$CONF"; then
        die "$CONF exists and was not written by this script; not touching it"
    fi
    local cpus mem_mb
    cpus=$(nproc)
    mem_mb=$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)
    mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
    cat >"$CONF.tmp" <<EOF
$MARK
ClusterName=heartbench
SlurmctldHost=$NODE
SlurmUser=root
AuthType=auth/munge
# Short credential lifetime: a requeued job waits ~30 s instead of ~120 s before it restarts.
AuthInfo=cred_expire=10
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
MpiDefault=none
ReturnToService=2
KillWait=10
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
NodeName=$NODE CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
    mv "$CONF.tmp" "$CONF"
    # A state directory left by another cluster name stops slurmctld (CLUSTER NAME MISMATCH).
    if [[ -f /var/spool/slurmctld/clustername ]] \
            && [[ "$(cat /var/spool/slurmctld/clustername)" != heartbench ]]; then
        rm -f /var/spool/slurmctld/clustername
    fi
}

start_munge() {
    if [[ -n "$(pid_of /run/munge/munged.pid munged)" ]]; then return 0; fi
    mkdir -p /run/munge /etc/munge /var/lib/munge /var/log/munge
    if [[ ! -s /etc/munge/munge.key ]]; then
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
    fi
    chown munge:munge /run/munge /etc/munge/munge.key /var/lib/munge /var/log/munge
    chmod 0400 /etc/munge/munge.key
    chmod 0755 /run/munge
    runuser -u munge -- /usr/sbin/munged
    record munged /run/munge/munged.pid
}

start_daemon() {  # start_daemon NAME PIDFILE: start NAME unless it runs already
    local name=$1 pidfile=$2
    if [[ -n "$(pid_of "$pidfile" "$name")" ]]; then return 0; fi
    "/usr/sbin/$name" || die "$name did not start (log: /var/log/slurm/$name.log)"
    record "$name" "$pidfile"
}

record() {  # record NAME PIDFILE: remember the pid of a daemon this script started
    local name=$1 pidfile=$2 pid=""
    for _ in $(seq 50); do
        pid=$(pid_of "$pidfile" "$name")
        [[ -n $pid ]] && break
        sleep 0.1
    done
    [[ -n $pid ]] || die "$name did not write $pidfile"
    mkdir -p "$(dirname "$STATE")"
    echo "$name $pid" >>"$STATE"
}

node_state() { sinfo -h -n "$NODE" -o %T 2>/dev/null | head -1 || true; }

up() {
    [[ $(id -u) -eq 0 ]] || die "must run as root (it installs packages and starts daemons)"
    install
    write_conf
    start_munge
    start_daemon slurmctld /run/slurmctld.pid
    start_daemon slurmd /run/slurmd.pid
    local state=""
    for _ in $(seq "$WAIT_S"); do
        state=$(node_state)
        if [[ $state == idle* || $state == mixed* || $state == allocated* ]]; then
            say "node $NODE is $state ($(nproc) CPUs, partition debug); stop it with: $0 down"
            return 0
        fi
        if [[ $state == down* || $state == drain* ]]; then
            scontrol update NodeName="$NODE" State=RESUME >/dev/null 2>&1 || true
        fi
        sleep 1
    done
    die "node $NODE not idle after ${WAIT_S} s (state: ${state:-unknown}; logs in /var/log/slurm)"
}

down() {
    [[ -f $STATE ]] || { say "nothing to stop (this script started no daemon)"; return 0; }
    local name pid stopped=()
    # Reverse order: slurmd, slurmctld, then munged.
    while read -r name pid; do
        if alive "$pid" "$name"; then
            kill "$pid" 2>/dev/null || true  # it may end between the check and the kill
            for _ in $(seq 100); do alive "$pid" "$name" || break; sleep 0.1; done
            if alive "$pid" "$name"; then kill -9 "$pid" 2>/dev/null || true; fi
            stopped+=("$name($pid)")
        fi
    done < <(tac "$STATE")
    rm -f "$STATE"
    say "stopped ${stopped[*]:-nothing (already gone)}"
}

status() {
    command -v sinfo >/dev/null || { say "not installed"; return 1; }
    local state
    state=$(node_state)
    if [[ -z $state ]]; then say "no controller answers"; return 1; fi
    say "node $NODE is $state"
}

case "${1:-}" in
    up) up ;;
    down) down ;;
    status) status ;;
    *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
