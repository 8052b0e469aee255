#!/usr/bin/env bash
# Start a private single-node SLURM on localhost: munged, mariadbd, slurmdbd, slurmctld, slurmd, with partitions
# `cpu` (default) and `gpu`, a schedulable GPU GRES (no device needed: File=/dev/null) and accounting in MariaDB.
# Usage: tests/slurm/start.sh STATE_DIR   (then: export SLURM_CONF=STATE_DIR/slurm.conf; stop.sh STATE_DIR)
# Every daemon started here writes its pid to STATE_DIR/pids/<name>.pid; stop.sh stops exactly those.
# The node announces CPUS (default 8) and MEMORY_MB (default 32000) whatever the host has
# (SlurmdParameters=config_overrides), so jobs get the threads their rules declare on a small CI machine.
set -euo pipefail
STATE=$(realpath -m "${1:?usage: start.sh STATE_DIR}")
CPUS=${CPUS:-8}
MEMORY_MB=${MEMORY_MB:-32000}
ACCOUNT=${ACCOUNT:-screen}
PORT_BASE=${PORT_BASE:-36800}
DB_PORT=$((PORT_BASE + 6)) DBD_PORT=$((PORT_BASE + 19)) CTLD_PORT=$((PORT_BASE + 17)) SLURMD_PORT=$((PORT_BASE + 18))
HOST=$(hostname -s)
mkdir -p "$STATE"/{pids,log,ctld,spool,db}
chmod 755 "$STATE"
export SLURM_CONF="$STATE/slurm.conf"

wait_for() {  # wait_for SECONDS DESCRIPTION CMD...
  local n=$1 what=$2; shift 2
  for _ in $(seq "$n"); do "$@" >/dev/null 2>&1 && return 0; sleep 1; done
  echo "slurm: $what did not come up in ${n}s; logs in $STATE/log" >&2
  tail -n 20 "$STATE"/log/* >&2 || true
  "$(dirname "$0")/stop.sh" "$STATE" >&2   # leave nothing running behind a failed start
  exit 1
}
start() {  # start NAME CMD...: run a daemon in the foreground in the background, record its pid
  local name=$1; shift
  "$@" >>"$STATE/log/$name.out" 2>&1 &
  echo $! >"$STATE/pids/$name.pid"
}

# munge (system socket; reused when one already answers)
if ! (munge -n | unmunge) >/dev/null 2>&1; then
  install -d -o munge -g munge -m 0755 /run/munge
  install -d -o munge -g munge -m 0700 /var/log/munge /var/lib/munge
  [ -s /etc/munge/munge.key ] || runuser -u munge -- mungekey --create
  start munged runuser -u munge -- /usr/sbin/munged --foreground --force
  wait_for 30 munged sh -c 'munge -n | unmunge'
fi

# MariaDB on a private data directory and port
if [ ! -d "$STATE/db/mysql" ]; then
  mariadb-install-db --user=root --datadir="$STATE/db" --auth-root-authentication-method=normal \
    >"$STATE/log/mariadb-install.out" 2>&1
fi
start mariadbd /usr/sbin/mariadbd --no-defaults --user=root --datadir="$STATE/db" --port="$DB_PORT" \
  --bind-address=127.0.0.1 --socket="$STATE/mysqld.sock" --pid-file="$STATE/mysqld.pid" \
  --log-error="$STATE/log/mariadbd.log" --innodb-buffer-pool-size=64M --skip-log-bin
wait_for 60 mariadbd mariadb --no-defaults --socket="$STATE/mysqld.sock" -uroot -e "select 1"
mariadb --no-defaults --socket="$STATE/mysqld.sock" -uroot <<SQL
CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurm';
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurm';
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
SQL

cat >"$STATE/slurmdbd.conf" <<CONF
AuthType=auth/munge
DbdHost=localhost
DbdPort=$DBD_PORT
SlurmUser=root
LogFile=$STATE/log/slurmdbd.log
PidFile=$STATE/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
CONF
chmod 600 "$STATE/slurmdbd.conf"

cat >"$SLURM_CONF" <<CONF
ClusterName=pairedscreen
SlurmctldHost=$HOST
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SlurmdParameters=config_overrides
GresTypes=gpu
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=$DBD_PORT
AccountingStorageTRES=gres/gpu
AccountingStorageEnforce=associations
AccountingStoreFlags=job_comment
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MinJobAge=300
InactiveLimit=0
KillWait=5
SlurmctldTimeout=30
SlurmdTimeout=30
NodeName=$HOST CPUs=$CPUS RealMemory=$MEMORY_MB Gres=gpu:1 State=UNKNOWN
PartitionName=cpu Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=$HOST MaxTime=INFINITE State=UP
CONF
echo "Name=gpu File=/dev/null Count=1" >"$STATE/gres.conf"
# Also at the default path: the executor's job step drops SLURM_* variables (SLURM_CONF too) before its `srun`.
# Never over a configuration that is not ours.
if [ -e /etc/slurm/slurm.conf ] && [ "$(readlink /etc/slurm/slurm.conf)" != "$SLURM_CONF" ]; then
  if ! grep -q '^ClusterName=pairedscreen$' /etc/slurm/slurm.conf 2>/dev/null || [ ! -L /etc/slurm/slurm.conf ]; then
    echo "slurm: /etc/slurm/slurm.conf exists and is not a test cluster's; refusing to replace it" >&2
    "$(dirname "$0")/stop.sh" "$STATE" >&2
    exit 1
  fi
fi
mkdir -p /etc/slurm
ln -sfn "$SLURM_CONF" /etc/slurm/slurm.conf

start slurmdbd /usr/sbin/slurmdbd -D   # reads slurmdbd.conf beside $SLURM_CONF
wait_for 60 slurmdbd sacctmgr -n list cluster
sacctmgr -i add cluster pairedscreen >/dev/null 2>&1 || true
sacctmgr -i add account "$ACCOUNT" cluster=pairedscreen description=tests organization=tests >/dev/null 2>&1 || true
sacctmgr -i add user "$(id -un)" account="$ACCOUNT" cluster=pairedscreen >/dev/null 2>&1 || true

start slurmctld /usr/sbin/slurmctld -D -i -f "$SLURM_CONF"
wait_for 60 slurmctld scontrol ping
start slurmd /usr/sbin/slurmd -D -f "$SLURM_CONF"
wait_for 60 slurmd sh -c "sinfo -h -N -o %T | grep -Eq '^(idle|mixed|allocated)'"
echo "slurm: up (SLURM_CONF=$SLURM_CONF, account $ACCOUNT, partitions cpu gpu, $CPUS CPUs, gres gpu:1)"
