#!/usr/bin/env bash
# Stop every daemon tests/slurm/start.sh started (pids in STATE_DIR/pids), newest first; waits until each is gone.
set -uo pipefail
STATE=$(realpath -m "${1:?usage: stop.sh STATE_DIR}")
for name in slurmd slurmctld slurmdbd mariadbd munged; do
  f="$STATE/pids/$name.pid"
  [ -f "$f" ] || continue
  pid=$(cat "$f")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
  fi
  rm -f "$f"
done
if [ "$(readlink /etc/slurm/slurm.conf 2>/dev/null)" = "$STATE/slurm.conf" ]; then
  rm -f /etc/slurm/slurm.conf
fi
echo "slurm: stopped"
