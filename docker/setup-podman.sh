#!/usr/bin/env bash
# One-time machine set-up for building and running the image with podman (Debian 12, root or sudo).
# Idempotent. What it does, and why (details: docs/containers.md):
#  - installs podman, runc (crun fails here: "cgroups in hybrid mode not supported"), debootstrap;
#  - /etc/containers/containers.conf: runc, cgroupfs, file events, and default ulimits this machine
#    grants (podman asks for nofile=1048576, which is refused even to root: every run fails);
#  - where outbound HTTPS goes through a local CA, makes the host's CA bundle visible to pip and uv
#    inside builds and containers through mounts.conf (mounted, never committed into a layer).
set -euo pipefail
SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo -n"
need=()
for cmd in podman runc debootstrap; do command -v "$cmd" >/dev/null 2>&1 || need+=("$cmd"); done
if [ ${#need[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
conf=/etc/containers/containers.conf
if ! grep -q "mura: managed" "$conf" 2>/dev/null; then
  nofile=$(ulimit -Hn); nproc=$(ulimit -Hu)
  [ "$nproc" = unlimited ] && nproc=32768
  [ "$nproc" -gt 32768 ] && nproc=32768
  $SUDO mkdir -p /etc/containers
  $SUDO tee "$conf" >/dev/null <<CONF
# mura: managed by docker/setup-podman.sh
[containers]
default_ulimits = ["nofile=${nofile}:${nofile}", "nproc=${nproc}:${nproc}"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
CONF
fi
bundle=/etc/ssl/certs/ca-certificates.crt
if [ -f "$bundle" ] && ! grep -q "/etc/containers/mura-ca:/etc/xdg/pip" /etc/containers/mounts.conf 2>/dev/null; then
  $SUDO mkdir -p /etc/containers/mura-ca
  $SUDO cp "$bundle" /etc/containers/mura-ca/ca.crt
  printf '[global]\ncert = /etc/xdg/pip/ca.crt\n' | $SUDO tee /etc/containers/mura-ca/pip.conf >/dev/null
  echo "/etc/containers/mura-ca:/etc/xdg/pip" | $SUDO tee -a /etc/containers/mounts.conf >/dev/null
fi
podman info --format '{{.Host.OCIRuntime.Name}} {{.Host.CgroupManager}}' >/dev/null
