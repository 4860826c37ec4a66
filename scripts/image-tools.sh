#!/usr/bin/env bash
# Installs what `make image` and tests/image need to build and run the image
# on a Debian/Ubuntu machine (CI starts from a fresh one): podman with runc, and
# mmdebstrap for a local base image where no registry is reachable.
# Idempotent: returns at once when every tool is already there.
set -euo pipefail

PACKAGES=(podman buildah mmdebstrap fuse-overlayfs uidmap slirp4netns runc)
COMMANDS=(podman buildah mmdebstrap fuse-overlayfs newuidmap slirp4netns runc)

missing=()
for command in "${COMMANDS[@]}"; do
    command -v "$command" >/dev/null 2>&1 || missing+=("$command")
done
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi

echo "image-tools: installing ${PACKAGES[*]} (missing: ${missing[*]})" >&2
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >/dev/null
