#!/usr/bin/env bash
# Stop the one-node SLURM started by tests/hpc/start_local_slurm.sh: only the processes whose PIDs it recorded.
# Logs stay in the state folder for debugging; the PID file and the /etc/slurm/slurm.conf link are removed.
set -euo pipefail

STATE_DIR="${DEPTHDIF_SLURM_DIR:-/tmp/depthdif-slurm}"
PID_FILE="$STATE_DIR/pids"
SYSTEM_CONF=/etc/slurm/slurm.conf

log() { echo "[stop_local_slurm] $*" >&2; }

if [[ ! -s "$PID_FILE" ]]; then
    log "nothing to stop (no $PID_FILE)"
    exit 0
fi

# Cancel what is still queued or running first, so no job step outlives its slurmd.
if [[ -e "$STATE_DIR/slurm.conf" ]]; then
    SLURM_CONF="$STATE_DIR/slurm.conf" timeout 10 scancel --full --quiet "--partition=${DEPTHDIF_SLURM_PARTITION:-debug}" \
        2>/dev/null || true
fi

# Stop in reverse start order (slurmd, slurmctld, munged): TERM, then KILL after 10 s.
mapfile -t entries < <(tac "$PID_FILE")
for entry in "${entries[@]}"; do
    read -r name pid <<<"$entry"
    # Only signal the PID if it still is the daemon we recorded (PIDs get reused after a reboot or crash).
    if [[ $(cat "/proc/$pid/comm" 2>/dev/null) != "$name" ]]; then
        log "$name ($pid) already gone"
        continue
    fi
    kill -TERM "$pid"
    for _ in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.2
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "$name ($pid) ignored TERM for 10 s: KILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    log "$name ($pid) stopped"
done
rm -f "$PID_FILE"

if [[ -L $SYSTEM_CONF && $(readlink -f "$SYSTEM_CONF") == $(readlink -f "$STATE_DIR/slurm.conf") ]]; then
    rm -f "$SYSTEM_CONF"
fi
