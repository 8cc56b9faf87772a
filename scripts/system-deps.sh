#!/usr/bin/env bash
# Check (and as root with apt, install) the system tools pod-ops drives for real:
# tmux (runs live in it), git (code identity and sync), OpenSSH server/client and rsync
# (the ssh test tier and its benchmarks), Chromium (the browser tier: the HTML report), and a
# SLURM controller, node daemon, client and munge (the slurm tier starts a one-node cluster).
set -euo pipefail
missing=()
command -v tmux >/dev/null || missing+=(tmux)
command -v git >/dev/null || missing+=(git)
[ -x /usr/sbin/sshd ] || missing+=(openssh-server)
command -v ssh-keygen >/dev/null || missing+=(openssh-client)
command -v rsync >/dev/null || missing+=(rsync)
command -v chromium >/dev/null || missing+=(chromium)
[ -x /usr/sbin/slurmctld ] || missing+=(slurmctld)
[ -x /usr/sbin/slurmd ] || missing+=(slurmd)
command -v sbatch >/dev/null || missing+=(slurm-client)
[ -x /usr/sbin/munged ] || missing+=(munge)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
    echo "missing system packages: ${missing[*]} (install them with your package manager)" >&2
    exit 1
fi
