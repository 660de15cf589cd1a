#!/usr/bin/env bash
# Builds the Debian 12 base image locally when no container registry is reachable (once per machine):
# debootstrap → `podman import` as localhost/debian:bookworm, tagged with the Dockerfile's public
# default (docker.io/library/debian:bookworm-slim) so the same Dockerfile builds without a pull.
# Users with a registry never need this.
set -euo pipefail
IMAGE=localhost/debian:bookworm
if podman image exists "$IMAGE"; then
  podman tag "$IMAGE" docker.io/library/debian:bookworm-slim
  exit 0
fi
mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
mirror=${mirror:-http://deb.debian.org/debian}
root=$(mktemp -d /var/tmp/mura-base.XXXXXX)
trap 'rm -rf "$root"' EXIT
debootstrap --variant=minbase bookworm "$root" "$mirror" >/dev/null
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
tar -C "$root" -c . | podman import --change 'CMD ["bash"]' - "$IMAGE" >/dev/null
podman tag "$IMAGE" docker.io/library/debian:bookworm-slim
echo "built $IMAGE"
