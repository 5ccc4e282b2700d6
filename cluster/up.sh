#!/usr/bin/env bash
# make cluster: a one-machine Slurm cluster and a PostgreSQL-backed MLflow tracking server, all on
# 127.0.0.1, every file under one state folder (CLUSTER_DIR, default .cluster/ in the repository).
# Idempotent: what is missing is installed, what is not running is started, what runs is left.
# Needs root (Debian's packages, munge's and PostgreSQL's users) and apt-get where a package is missing.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
STATE="${CLUSTER_DIR:-$ROOT/.cluster}"
PY="${CLUSTER_PYTHON:-$ROOT/.venv/bin/python}"
say() { echo "cluster: $*"; }
die() { echo "cluster: error: $*" >&2; exit 2; }

[ "$(id -u)" = 0 ] || die "make cluster needs root (it installs Debian's slurm-wlm, munge and postgresql and runs their daemons as their users); run it as root, or in a container where you are"
[ -x "$PY" ] || die "no Python at $PY: run make install first (or set VENV=)"
mkdir -p "$STATE"
STATE="$(cd "$STATE" && pwd)"
# munged and PostgreSQL run as their own users: every folder above the state must let them through
runuser -u postgres -- test -x "$STATE" 2>/dev/null || ! id postgres >/dev/null 2>&1 ||
  die "the postgres user cannot reach $STATE (a folder above it is private): make cluster CLUSTER_DIR=/var/tmp/gradlab-cluster"
START=$EPOCHREALTIME

# ------------------------------------------------------------------ what is missing is installed
pgbin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1; }
missing=()
command -v munged >/dev/null || missing+=(munge)
command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null || missing+=(slurm-wlm)
[ -n "$(pgbin)" ] || missing+=(postgresql)
if [ ${#missing[@]} -gt 0 ]; then
  command -v apt-get >/dev/null || die "missing ${missing[*]} and no apt-get here: install them with this system's package manager"
  say "installing ${missing[*]} (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >"$STATE/apt.log" 2>&1 ||
    { apt-get update -qq >>"$STATE/apt.log" 2>&1 && apt-get install -y -qq --no-install-recommends "${missing[@]}" >>"$STATE/apt.log" 2>&1; } ||
    die "apt-get install ${missing[*]} failed: see $STATE/apt.log"
fi
if ! "$PY" -c "import submitit, psycopg" 2>/dev/null; then
  say "installing submitit and psycopg into $(dirname "$(dirname "$PY")") (the cluster extra)"
  "$PY" -m pip install --quiet --disable-pip-version-check "submitit>=1.5" "psycopg[binary]>=3.2" ||
    die "pip could not install submitit and psycopg[binary]"
fi
PGBIN="$(pgbin)"

# ------------------------------------------------------------------ ports, chosen once, kept
free_port() {  # $1 if nothing listens there, else one the kernel picks
  "$PY" - "$1" <<'PY'
import socket, sys
def bindable(port):
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return s.getsockname()[1]
        except OSError:
            return None
print(bindable(int(sys.argv[1])) or bindable(0))
PY
}
if [ ! -f "$STATE/ports.env" ]; then
  {
    echo "SLURMCTLD_PORT=$(free_port 6817)"
    echo "SLURMD_PORT=$(free_port 6818)"
    echo "PG_PORT=$(free_port 5433)"
    echo "MLFLOW_PORT=$(free_port 5051)"
  } >"$STATE/ports.env"
fi
. "$STATE/ports.env"

running() {  # pid file $1 names a live process whose command line holds $2
  [ -f "$1" ] || return 1
  local pid; pid="$(head -1 "$1" 2>/dev/null)"; [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "$2"
}
wait_until() {  # seconds, what, command...
  local limit=$1 what=$2; shift 2
  local end=$(( $(date +%s) + limit ))
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s)" -lt "$end" ] || die "$what did not come up within ${limit} s"
    sleep 0.2
  done
}

# ------------------------------------------------------------------ munge: the key Slurm signs with
M="$STATE/munge"
mkdir -p "$M"
chown munge:munge "$M"; chmod 0755 "$M"  # clients (Slurm) reach its socket here
if [ ! -s "$M/munge.key" ]; then
  dd if=/dev/urandom bs=1 count=1024 of="$M/munge.key" status=none
fi
chown munge:munge "$M/munge.key"; chmod 0400 "$M/munge.key"
if ! running "$M/munged.pid" munged; then
  rm -f "$M/munged.pid" "$M/munge.socket.2" "$M/munge.socket.2.lock"
  runuser -u munge -- munged --socket="$M/munge.socket.2" --key-file="$M/munge.key" --pid-file="$M/munged.pid" \
    --log-file="$M/munged.log" --seed-file="$M/munged.seed" || die "munged did not start: see $M/munged.log"
  say "munged started"
fi
wait_until 10 munged munge -S "$M/munge.socket.2" -n

# ------------------------------------------------------------------ Slurm: one node, this machine
S="$STATE/slurm"
mkdir -p "$S/state" "$S/spool" "$S/log"
HOST="$(hostname -s)"
NODE="$(slurmd -C | head -1 | sed "s/^NodeName=[^ ]*/NodeName=$HOST NodeAddr=127.0.0.1 NodeHostname=$HOST/")"
cat >"$S/slurm.conf.new" <<CONF
# written by cluster/up.sh: a one-node cluster on this machine
ClusterName=gradlab
SlurmctldHost=$HOST(127.0.0.1)
SlurmctldPort=$SLURMCTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$M/munge.socket.2
StateSaveLocation=$S/state
SlurmdSpoolDir=$S/spool/%n
SlurmctldPidFile=$S/slurmctld.pid
SlurmdPidFile=$S/slurmd.pid
SlurmctldLogFile=$S/log/slurmctld.log
SlurmdLogFile=$S/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SwitchType=switch/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
# the scheduler's default pace starts about 2 array tasks every 3 s
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0
ReturnToService=2
KillWait=10
MinJobAge=600
InactiveLimit=0
SlurmctldTimeout=60
SlurmdTimeout=60
$NODE State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
# a changed configuration (another machine size, other ports) restarts the daemons
if ! cmp -s "$S/slurm.conf.new" "$S/slurm.conf" 2>/dev/null; then
  mv "$S/slurm.conf.new" "$S/slurm.conf"
  for d in slurmd slurmctld; do
    if running "$S/$d.pid" "$d"; then kill "$(head -1 "$S/$d.pid")"; fi
  done
  sleep 0.5
else
  rm -f "$S/slurm.conf.new"
fi
export SLURM_CONF="$S/slurm.conf"
if ! running "$S/slurmctld.pid" slurmctld; then
  slurmctld -c || die "slurmctld did not start: see $S/log/slurmctld.log"   # -c: a fresh queue
  say "slurmctld started"
fi
if ! running "$S/slurmd.pid" slurmd; then
  slurmd -N "$HOST" || die "slurmd did not start: see $S/log/slurmd.log"
  say "slurmd started"
fi
node_up() { sinfo -h -N -o %T | grep -qE '^(idle|mixed|allocated)'; }
wait_until 30 "the Slurm node (sinfo)" node_up

# ------------------------------------------------------------------ PostgreSQL: the tracking server's database
P="$STATE/postgres"
mkdir -p "$P/run"
chown postgres:postgres "$P" "$P/run"; chmod 0700 "$P"
if [ ! -s "$P/password" ]; then
  (umask 077; "$PY" -c "import secrets; print(secrets.token_hex(16))" >"$P/password")
fi
PGPASS="$(cat "$P/password")"
if [ ! -f "$P/data/PG_VERSION" ]; then
  rm -rf "$P/data"
  install -o postgres -g postgres -m 0600 "$P/password" "$P/run/pw"
  runuser -u postgres -- "$PGBIN/initdb" -D "$P/data" -U gradlab --pwfile="$P/run/pw" --auth=scram-sha-256 \
    -E UTF8 --no-instructions >"$P/initdb.log" 2>&1 || die "initdb failed: see $P/initdb.log"
  rm -f "$P/run/pw"
  cat >>"$P/data/postgresql.conf" <<CONF
# cluster/up.sh: on 127.0.0.1 only, its socket in the state folder
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$P/run'
CONF
fi
if ! runuser -u postgres -- "$PGBIN/pg_ctl" -D "$P/data" status >/dev/null 2>&1; then
  runuser -u postgres -- "$PGBIN/pg_ctl" -D "$P/data" -l "$P/postgres.log" -w -t 30 start >/dev/null ||
    die "PostgreSQL did not start: see $P/postgres.log"
  say "PostgreSQL started on 127.0.0.1:$PG_PORT"
fi
psql_() { PGPASSWORD="$PGPASS" "$PGBIN/psql" -h 127.0.0.1 -p "$PG_PORT" -U gradlab -d postgres -tAq "$@"; }
[ "$(psql_ -c "SELECT 1 FROM pg_database WHERE datname = 'mlflow'")" = 1 ] || psql_ -c "CREATE DATABASE mlflow" ||
  die "could not create the database mlflow"

# ------------------------------------------------------------------ the MLflow tracking server on it
F="$STATE/mlflow"
mkdir -p "$F" "$STATE/artifacts"
URI="http://127.0.0.1:$MLFLOW_PORT"
# Ready once its API answers, not only /health: each worker opens the database at its first request
# (a fresh one is migrated first), which takes seconds; a few requests open both.
api() { "$PY" -c "import urllib.request, sys; urllib.request.urlopen(sys.argv[1] + '/api/2.0/mlflow/experiments/search?max_results=1', timeout=60).read()" "$URI"; }
ready() { api && api && api && api; }
if ! running "$F/server.pid" "mlflow server"; then
  # its own session (setsid): cluster-down ends the server and its workers together. One worker
  # by default: each takes seconds of CPU to start (a cold start here: 35 s with one, 56 s with
  # two, on a loaded 2-core machine); MLFLOW_WORKERS=4 make cluster for many writers.
  MLFLOW_TRACKING_URI= MLFLOW_DISABLE_TELEMETRY=true setsid "$PY" -m mlflow server --host 127.0.0.1 --port "$MLFLOW_PORT" \
    --backend-store-uri "postgresql+psycopg://gradlab:$PGPASS@127.0.0.1:$PG_PORT/mlflow" \
    --serve-artifacts --artifacts-destination "$STATE/artifacts" --workers "${MLFLOW_WORKERS:-1}" \
    >"$F/server.log" 2>&1 </dev/null &
  echo $! >"$F/server.pid"
  say "mlflow server starting on $URI (its log: $F/server.log)"
fi
wait_until 240 "the MLflow tracking server (see $F/server.log)" ready

cat >"$STATE/env" <<ENV
export SLURM_CONF=$S/slurm.conf
export MLFLOW_TRACKING_URI=$URI
ENV
say "up in $(awk -v a="$START" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }') s; state in $STATE (make cluster-down stops it)"
echo
echo "  export SLURM_CONF=$S/slurm.conf"
echo "  export MLFLOW_TRACKING_URI=$URI"
echo "  make sweep SWEEP=lr_scale_optimizer ARGS=hydra/launcher=batched_slurm"
echo
echo "  (or: . $STATE/env)"
