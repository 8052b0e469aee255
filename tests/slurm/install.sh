#!/usr/bin/env bash
# Install a single-node SLURM (Debian packages: Slurm 22.05, slurmdbd on MariaDB, munge) when missing.
# Idempotent: does nothing when every daemon is already installed. Needs root (CI runs as root).
set -euo pipefail
need=()
for bin in munged mariadbd slurmdbd slurmctld slurmd sbatch sacct sacctmgr; do
  command -v "$bin" >/dev/null 2>&1 || [ -x "/usr/sbin/$bin" ] || need+=("$bin")
done
if [ ${#need[@]} -eq 0 ]; then
  echo "slurm: already installed"; exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "slurm: missing ${need[*]} and not root: install slurmctld slurmd slurmdbd slurm-client munge mariadb-server" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt_get() { apt-get -o DPkg::Lock::Timeout=600 "$@"; }
# one `apt-get update` (skipped when the package lists already know slurmctld)
apt-cache show slurmctld >/dev/null 2>&1 || apt_get update -q
apt_get install -y -q --no-install-recommends slurmctld slurmd slurmdbd slurm-client munge mariadb-server \
  >/dev/null
echo "slurm: installed $(dpkg-query -W -f '${Version}' slurmctld)"
