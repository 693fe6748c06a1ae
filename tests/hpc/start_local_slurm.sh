#!/usr/bin/env bash
# Start a one-node SLURM cluster on this machine, for the tests that submit real jobs (tests/test_slurm.py).
#
#   tests/hpc/start_local_slurm.sh        # prints the partition name on its last line
#   tests/hpc/stop_local_slurm.sh         # stops what this script started, by PID
#
# Why this shape: CI runs as root in a container without systemd, so the daemons are started by hand in the
# foreground-mode that needs no init system (munged --foreground, slurmctld -D, slurmd -D), with every piece
# of state (config, spool, state save, logs, PIDs) in one folder; the only thing written outside it is a link
# /etc/slurm/slurm.conf -> that folder (so plain `sbatch` finds the cluster), removed by the stop script. Accounting
# (slurmdbd) is deliberately absent: the profile then has to use `squeue` for job status, which is exactly the
# situation of many real clusters; MinJobAge=600 keeps finished jobs visible to squeue long enough.
# Two fake GPUs (GRES backed by links to /dev/null) let the profile's GPU requests (--gpus) be scheduled for real.
#
# Environment (all optional):
#   DEPTHDIF_SLURM_DIR        state folder                  (default /tmp/depthdif-slurm)
#   DEPTHDIF_SLURM_PARTITION  name of the single partition  (default debug)
#   DEPTHDIF_SLURM_GPUS       fake GPUs on the node         (default 2)
# Idempotent: if the daemons recorded in $DEPTHDIF_SLURM_DIR/pids are alive and sinfo answers, it does nothing.
set -euo pipefail

STATE_DIR="${DEPTHDIF_SLURM_DIR:-/tmp/depthdif-slurm}"
PARTITION="${DEPTHDIF_SLURM_PARTITION:-debug}"
FAKE_GPUS="${DEPTHDIF_SLURM_GPUS:-2}"
PID_FILE="$STATE_DIR/pids"
SYSTEM_CONF=/etc/slurm/slurm.conf

log() { echo "[start_local_slurm] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

pids_alive() {
    # True when the PID file exists and every PID in it is still the daemon it names (not a reused PID).
    [[ -s "$PID_FILE" ]] || return 1
    local name pid
    while read -r name pid; do
        [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$name" ]] || return 1
    done <"$PID_FILE"
}

node_idle() {
    sinfo -h -p "$PARTITION" -o '%t' 2>/dev/null | grep -qE '^(idle|mix|alloc)'
}

wait_for() {
    # wait_for SECONDS DESCRIPTION COMMAND...: poll COMMAND every 0.2 s until it succeeds.
    local seconds=$1 what=$2
    shift 2
    local deadline=$((SECONDS + seconds))
    until "$@"; do
        ((SECONDS < deadline)) || return 1
        sleep 0.2
    done
    log "$what: ready"
}

install_packages() {
    local missing=()
    command -v sbatch >/dev/null && command -v slurmctld >/dev/null && command -v slurmd >/dev/null \
        || missing+=(slurm-wlm)
    command -v munged >/dev/null || missing+=(munge)
    ((${#missing[@]} == 0)) && return 0
    [[ $(id -u) == 0 ]] || die "${missing[*]} not installed and not root: run 'apt-get install -y ${missing[*]}' as root."
    command -v apt-get >/dev/null || die "${missing[*]} not installed and no apt-get here: install them with your package manager."
    log "installing ${missing[*]} (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -q --no-install-recommends "${missing[@]}" >"$STATE_DIR/apt.log" 2>&1; then
        apt-get update -q >>"$STATE_DIR/apt.log" 2>&1
        apt-get install -y -q --no-install-recommends "${missing[@]}" >>"$STATE_DIR/apt.log" 2>&1 \
            || die "apt-get install ${missing[*]} failed, see $STATE_DIR/apt.log"
    fi
}

munge_works() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }

start_munged() {
    # A munged that already answers (started by the system or an earlier run) is reused and not recorded,
    # so the stop script never kills a daemon it did not start.
    if munge_works; then
        log "munged: already running, reused"
        return 0
    fi
    [[ -s /etc/munge/munge.key ]] || {
        log "creating /etc/munge/munge.key"
        mungekey --create --keyfile=/etc/munge/munge.key
    }
    chown munge:munge /etc/munge/munge.key && chmod 0400 /etc/munge/munge.key
    install -d -o munge -g munge -m 0755 /run/munge
    install -d -o munge -g munge -m 0700 /var/lib/munge /var/log/munge
    setpriv --reuid=munge --regid=munge --init-groups /usr/sbin/munged --foreground \
        </dev/null >"$STATE_DIR/log/munged.log" 2>&1 &
    echo "munged $!" >>"$PID_FILE"
    wait_for 20 munged munge_works || die "munged did not answer within 20 s, see $STATE_DIR/log/munged.log"
}

write_config() {
    local host cpus mem_mb
    host=$(hostname -s)
    cpus=$(nproc)
    # 90 % of the total memory: slurmd drains a node whose RealMemory exceeds what it measures.
    mem_mb=$(free -m | awk '/^Mem:/ {print int($2 * 0.9)}')
    # A fresh cluster each time: job and node state of an earlier run (a drained node...) must not leak in.
    rm -rf "$STATE_DIR/state" "$STATE_DIR/spool"
    mkdir -p "$STATE_DIR/state" "$STATE_DIR/spool"
    cat >"$STATE_DIR/slurm.conf" <<CONF
# Written by tests/hpc/start_local_slurm.sh: a one-node test cluster, state under $STATE_DIR.
ClusterName=depthdif-local
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
ReturnToService=2
# Finished jobs stay visible to squeue for 10 min: the profile's status command (squeue) needs this.
MinJobAge=600
StateSaveLocation=$STATE_DIR/state
SlurmdSpoolDir=$STATE_DIR/spool
SlurmctldPidFile=$STATE_DIR/slurmctld.pid
SlurmdPidFile=$STATE_DIR/slurmd.pid
SlurmctldLogFile=$STATE_DIR/log/slurmctld.log
SlurmdLogFile=$STATE_DIR/log/slurmd.log
GresTypes=gpu
NodeName=$host CPUs=$cpus RealMemory=$mem_mb Gres=gpu:$FAKE_GPUS State=UNKNOWN
PartitionName=$PARTITION Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
    # Fake GPUs: links to /dev/null stand in for /dev/nvidia*, so --gpus requests are scheduled while
    # nothing real is bound; the tests train on CPU. slurm 22.05 drops gpu records without File= and wants a
    # character device there, hence the links. slurmd reads gres.conf beside the slurm.conf it was given.
    local i
    for ((i = 0; i < FAKE_GPUS; i++)); do ln -sfn /dev/null "$STATE_DIR/fake-gpu$i"; done
    echo "NodeName=$host Name=gpu File=$STATE_DIR/fake-gpu[0-$((FAKE_GPUS - 1))]" >"$STATE_DIR/gres.conf"
}

link_system_config() {
    # sbatch/sinfo/squeue read /etc/slurm/slurm.conf unless SLURM_CONF is set; link ours there so any shell
    # (and Snakemake's executor) finds this cluster. Never replace a config that is not ours.
    mkdir -p /etc/slurm
    if [[ -e $SYSTEM_CONF || -L $SYSTEM_CONF ]]; then
        if [[ $(readlink -f "$SYSTEM_CONF") != $(readlink -f "$STATE_DIR/slurm.conf") ]]; then
            log "WARNING: $SYSTEM_CONF exists and is not ours; export SLURM_CONF=$STATE_DIR/slurm.conf to use this cluster"
            return 0
        fi
    else
        ln -s "$STATE_DIR/slurm.conf" "$SYSTEM_CONF"
    fi
}

start_slurm() {
    export SLURM_CONF="$STATE_DIR/slurm.conf"
    slurmctld -D -f "$SLURM_CONF" </dev/null >"$STATE_DIR/log/slurmctld.out" 2>&1 &
    echo "slurmctld $!" >>"$PID_FILE"
    slurmd -D -f "$SLURM_CONF" </dev/null >"$STATE_DIR/log/slurmd.out" 2>&1 &
    echo "slurmd $!" >>"$PID_FILE"
    wait_for 60 "node $(hostname -s) idle in partition $PARTITION" node_idle \
        || die "node not idle within 60 s; see $STATE_DIR/log/slurmctld.log and slurmd.log ($(sinfo 2>&1 | tail -1))"
}

main() {
    if pids_alive && SLURM_CONF="$STATE_DIR/slurm.conf" node_idle; then
        log "already running (PIDs in $PID_FILE)"
        echo "$PARTITION"
        return 0
    fi
    if [[ -s "$PID_FILE" ]]; then
        log "stale cluster in $STATE_DIR: stopping it first"
        "$(dirname "$0")/stop_local_slurm.sh"
    fi
    rm -rf "$STATE_DIR/log"
    mkdir -p "$STATE_DIR/log"
    : >"$PID_FILE"
    install_packages
    start_munged
    write_config
    link_system_config
    start_slurm
    echo "$PARTITION"
}

main "$@"
