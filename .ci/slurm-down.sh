#!/usr/bin/env bash
# Stop what .ci/slurm-up.sh started (slurmd, slurmctld, munged), by their pid files: TERM,
# then KILL after 15 s. Packages, slurm.conf, the munge key and Slurm's state stay.
# Safe to run when nothing runs.
set -euo pipefail

stop() {  # stop NAME PIDFILE
  local name=$1 pidfile=$2 pid
  [[ -s $pidfile ]] || { echo "[slurm-down] $name: not running"; return 0; }
  pid=$(cat "$pidfile")
  if kill -TERM "$pid" 2>/dev/null; then
    for _ in $(seq 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    if kill -0 "$pid" 2>/dev/null; then
      echo "[slurm-down] $name (pid $pid) ignored TERM: KILL" >&2
      kill -KILL "$pid" 2>/dev/null || true
    fi
    echo "[slurm-down] $name stopped (pid $pid)"
  else
    echo "[slurm-down] $name: not running (stale pid $pid)"
  fi
  rm -f "$pidfile"
}

[[ $EUID -eq 0 ]] || { echo "[slurm-down] must run as root" >&2; exit 1; }
stop slurmd /run/slurmd.pid
stop slurmctld /run/slurmctld.pid
stop munged /run/munge/munged.pid
