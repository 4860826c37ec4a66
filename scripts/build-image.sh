#!/usr/bin/env bash
# `make image`: build the embrel image (Dockerfile) and tag it with the name every
# manifest and the chart use (`python -m controller.manifests --image`).
#
# Settings (environment):
#   PYTHON           a Python that can import controller (default python3)
#   ENGINE           podman (default when installed) or docker
#   EXTRAS           "" (default) or "embed": the embedder image, tagged <version>-embed
#   BASE_IMAGE       default python:3.11-slim-bookworm; "mmdebstrap" builds a local
#                    Debian bookworm base from this machine's apt mirror (no registry)
#   TORCH_INDEX_URL  where the embed build takes torch (Dockerfile default: the CPU index;
#                    empty: wherever the host's pip settings point)
#   PODMAN_STORAGE   a folder for podman's images instead of its default storage
#   HOST_PIP         1 (default): the build's pip uses this host's pip settings and CA
#                    bundle, passed as build secrets (scripts/host_pip_settings.py)
#   SAVE             a path: also write the image there as an OCI archive (for `kind load`)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-python3}
EXTRAS=${EXTRAS:-}
BASE_IMAGE=${BASE_IMAGE:-python:3.11-slim-bookworm}
HOST_PIP=${HOST_PIP:-1}
LOCAL_BASE=localhost/embrel-base:bookworm

if [ -z "${ENGINE:-}" ]; then
    if command -v podman >/dev/null 2>&1; then ENGINE=podman; else ENGINE=docker; fi
fi
engine=("$ENGINE")
if [ "$ENGINE" = podman ]; then
    "$ROOT/scripts/image-tools.sh"
    # runc and explicit ulimits: the defaults (crun, the host's limits) fail in
    # unprivileged CI containers.
    export CONTAINERS_CONF=${CONTAINERS_CONF:-$ROOT/scripts/containers.conf}
    if [ -n "${PODMAN_STORAGE:-}" ]; then
        engine+=(--root "$PODMAN_STORAGE/graph" --runroot "$PODMAN_STORAGE/run")
    fi
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

apt_mirror() {
    # The first Debian mirror in this machine's apt sources (deb822 or one-line style).
    local uri
    uri=$(grep -hsE '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}' | grep -v security | head -n1 || true)
    if [ -z "$uri" ]; then
        uri=$(grep -hsE '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list | awk '{print $2}' | grep -v security | head -n1 || true)
    fi
    echo "${uri:-http://deb.debian.org/debian}"
}

if [ "$BASE_IMAGE" = mmdebstrap ]; then
    if ! "${engine[@]}" image exists "$LOCAL_BASE" 2>/dev/null; then
        mirror=$(apt_mirror)
        echo "build-image: base $LOCAL_BASE from Debian bookworm ($mirror)" >&2
        mmdebstrap --quiet --variant=minbase --include=python3,python3-venv,ca-certificates \
            bookworm "$work/rootfs.tar" "$mirror"
        "${engine[@]}" import "$work/rootfs.tar" "$LOCAL_BASE" >/dev/null
        rm -f "$work/rootfs.tar"
    fi
    BASE_IMAGE=$LOCAL_BASE
fi

flags=(--build-arg "BASE_IMAGE=$BASE_IMAGE" --build-arg "EXTRAS=$EXTRAS")
if [ -n "${TORCH_INDEX_URL+set}" ]; then
    flags+=(--build-arg "TORCH_INDEX_URL=$TORCH_INDEX_URL")
fi
if [ "$HOST_PIP" = 1 ]; then
    # Mount what the host's pip settings name read-only at the same paths; the pip.conf
    # and the CA bundle are secrets, present only while pip runs.
    while read -r path; do
        # docker build has no --volume: there the pip.conf must not name local paths.
        [ -n "$path" ] && [ "$ENGINE" = podman ] && flags+=(--volume "$path:$path:ro")
    done < <(python3 "$ROOT/scripts/host_pip_settings.py" "$work/pip.conf" "$PYTHON")
    flags+=(--secret "id=pip_conf,src=$work/pip.conf")
    cert=${PIP_CERT:-$("$PYTHON" -m pip config get global.cert 2>/dev/null || true)}
    cert=${cert:-/etc/ssl/certs/ca-certificates.crt}
    [ -f "$cert" ] && flags+=(--secret "id=pip_cert,src=$cert")
fi

manifests() { (cd "$ROOT" && "$PYTHON" -m controller.manifests "$@"); }
version=$(manifests --version)
image=$(manifests --image ${EXTRAS:+--extras "$EXTRAS"})
# Fully qualified, so a `kind load` of the archive matches the manifests' short name.
case "${image%%/*}" in
    *.*|*:*|localhost) tag=$image ;;
    *) tag=docker.io/$image ;;
esac

echo "build-image: $tag (base $BASE_IMAGE${EXTRAS:+, extras $EXTRAS})" >&2
started=$(date +%s)
"${engine[@]}" build --network=host \
    "${flags[@]}" --build-arg "VERSION=$version" -t "$tag" -f "$ROOT/Dockerfile" "$ROOT"
elapsed=$(( $(date +%s) - started ))
size=$("${engine[@]}" image inspect --format '{{.Size}}' "$tag")
echo "build-image: built $tag in ${elapsed}s, $(( size / 1000000 )) MB" >&2
if [ -n "${SAVE:-}" ]; then
    rm -f "$SAVE"
    "${engine[@]}" save --format oci-archive -o "$SAVE" "$tag"
    echo "build-image: saved $SAVE ($(( $(stat -c %s "$SAVE") / 1000000 )) MB)" >&2
fi
