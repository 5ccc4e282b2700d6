#!/usr/bin/env bash
# make cluster-down: stop what make cluster started (by the pid files in its state folder), nothing
# else. The state (the database, the artifacts, the munge key) stays for the next make cluster;
# remove the folder to start afresh.
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
STATE="${CLUSTER_DIR:-$ROOT/.cluster}"
say() { echo "cluster: $*"; }
[ -d "$STATE" ] || { say "nothing to stop ($STATE does not exist)"; exit 0; }
STATE="$(cd "$STATE" && pwd)"

live() {  # the pid in file $1, if it is a live process whose command line holds $2
  [ -f "$1" ] || return 1
  local pid; pid="$(head -1 "$1" 2>/dev/null)"; [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "$2" && echo "$pid"
}
stop() {  # pid file, command, name[, group[, seconds]]: SIGTERM (to its process group if asked), SIGKILL after the seconds (15)
  local pid; pid="$(live "$1" "$2")" || { rm -f "$1"; return 0; }
  if [ "${4:-}" = group ]; then kill -TERM -- "-$pid" 2>/dev/null; else kill -TERM "$pid" 2>/dev/null; fi
  for _ in $(seq $(( ${5:-15} * 5 ))); do [ -r "/proc/$pid/cmdline" ] || break; sleep 0.2; done
  if [ -r "/proc/$pid/cmdline" ]; then
    if [ "${4:-}" = group ]; then kill -KILL -- "-$pid" 2>/dev/null; else kill -KILL "$pid" 2>/dev/null; fi
  fi
  rm -f "$1"
  say "$3 stopped"
}

# the server keeps nothing of its own (PostgreSQL and the artifact folder do): its workers'
# graceful shutdown (about 13 s here) is not waited for beyond 3 s
stop "$STATE/mlflow/server.pid" "mlflow server" "the mlflow server" group 3
if [ -f "$STATE/postgres/data/postmaster.pid" ]; then
  PGBIN="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)"
  if runuser -u postgres -- "$PGBIN/pg_ctl" -D "$STATE/postgres/data" status >/dev/null 2>&1; then
    runuser -u postgres -- "$PGBIN/pg_ctl" -D "$STATE/postgres/data" -m fast -w -t 30 stop >/dev/null && say "PostgreSQL stopped"
  fi
fi
if live "$STATE/slurm/slurmctld.pid" slurmctld >/dev/null; then  # its jobs first: their steps outlive slurmd
  export SLURM_CONF="$STATE/slurm/slurm.conf"
  jobs="$(squeue -h -o %A 2>/dev/null | sort -u)"
  if [ -n "$jobs" ]; then
    scancel $jobs 2>/dev/null
    for _ in $(seq 75); do [ -z "$(squeue -h -o %A 2>/dev/null)" ] && break; sleep 0.2; done
    say "cancelled its jobs ($(echo $jobs | wc -w))"
  fi
fi
stop "$STATE/slurm/slurmd.pid" slurmd slurmd
stop "$STATE/slurm/slurmctld.pid" slurmctld slurmctld
stop "$STATE/munge/munged.pid" munged munged
exit 0
