#!/usr/bin/env bash
# Build the stand-in for Open WebUI's upstream image without a registry, into an image store of its own that the
# scenario's frontend target mounts read-only as an additional image store: the image appears there under the
# upstream name and tag, as on an air-gapped host after `podman load`, without copying 3 GB into the target.
#
#   build_webui_image.sh ghcr.io/open-webui/open-webui v0.12.4               fetch the wheels if needed, then build
#   build_webui_image.sh --fetch-only ghcr.io/open-webui/open-webui v0.12.4  fetch the wheels only (no image needed:
#                                                                            `make setup` runs it beside debootstrap)
#
# The stand-in is the same Open WebUI release from PyPI, installed into a venv on top of the local target image
# (Containerfile beside this script). Wheels are fetched once into .cache/open-webui-wheels/<version> (pip on the
# host: PyPI, plus a find-links directory for torch's CPU build); the image build itself is offline. The image is
# tagged with a hash of its recipe (the Containerfile, the build command, the versions, the base image), so it is
# built once and rebuilt only when one of them changes. Prints the upstream reference on its last line.
set -euo pipefail

fetch_only=false
if [ "${1:-}" = "--fetch-only" ]; then
  fetch_only=true
  shift
fi
upstream_image=${1:?usage: build_webui_image.sh <image, e.g. ghcr.io/open-webui/open-webui> <tag, e.g. v0.12.4>}
tag=${2:?usage: build_webui_image.sh <image> <tag>}
version=${tag#v}
version=${version%%-*}
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
# Open WebUI pulls torch through sentence-transformers; PyPI's torch is the multi-GB CUDA build. The CPU build is a
# local-version wheel PyPI does not carry: pip takes it from a find-links directory.
torch_version=${LLMFLEET_OPEN_WEBUI_TORCH:-2.13.0+cpu}
torch_links=${LLMFLEET_TORCH_FIND_LINKS:-${PIP_FIND_LINKS:-/opt/wheels}}
base_image=${LLMFLEET_OPEN_WEBUI_BASE:-localhost/llmfleet-target:latest}
# Dependency markers depend on the exact interpreter (redis needs async-timeout below Python 3.11.3): the wheels are
# resolved by a Python of the same version as the image's (Debian 12's, on a Debian 12 host).
download_python=${LLMFLEET_OPEN_WEBUI_DOWNLOAD_PYTHON:-/usr/bin/python3}
wheels="$repo/.cache/open-webui-wheels/$version"
store="$repo/.cache/open-webui-store"
store_podman=(podman --root "$store" --runroot "$repo/.cache/open-webui-store-run" --storage-driver overlay)
local_repo=localhost/llmfleet-open-webui

# Resolved by the download Python, which must be the image's (checked before a build).
fetch_wheels() {
  [ -f "$wheels/.complete" ] && return 0
  local host_python started find_links
  host_python=$("$download_python" -c 'import platform; print(platform.python_version())')
  echo "    fetching open-webui==$version and its dependencies into $wheels (Python $host_python)" >&2
  started=$SECONDS
  find_links=(--find-links "$wheels")
  [ -d "$torch_links" ] && find_links+=(--find-links "$torch_links")
  mkdir -p "$wheels"
  # pip wheel rather than download: a dependency published only as sources is built here, once.
  "$download_python" -m pip wheel -q --disable-pip-version-check -w "$wheels" "${find_links[@]}" \
    "open-webui==$version" "torch==$torch_version" \
    2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
  echo "$host_python" >"$wheels/.complete"
  echo "    fetched $(du -sh "$wheels" | cut -f1) in $((SECONDS - started)) s" >&2
}

mkdir -p "$repo/.cache"
# Both frontends' scenarios build here, side by side in `make integration`, and setup fetches beside them: one at a
# time; the next one finds the work done.
exec 9>"$repo/.cache/open-webui-store.lock"
flock 9

if $fetch_only; then
  fetch_wheels
  exit 0
fi

mkdir -p "$store"
base_id=$(podman image inspect --format '{{.Id}}' "$base_image")
# The build command's settings, kept in one place: they are part of the recipe.
build_flags=(--format docker --layers=false --squash-all)
recipe_hash=$( { cat "$here/Containerfile"; echo "${build_flags[*]} $version $torch_version $base_id"; } \
  | sha256sum | cut -c1-12)
image="$local_repo:$recipe_hash"

if "${store_podman[@]}" image exists "$image"; then
  echo "    open-webui stand-in $image is current (recipe unchanged)" >&2
  "${store_podman[@]}" tag "$image" "$upstream_image:$tag"
  echo "$upstream_image:$tag"
  exit 0
fi

fetch_wheels
image_python=$(podman run --rm --network none "$base_image" python3 -c 'import platform; print(platform.python_version())')
if [ "$image_python" != "$(cat "$wheels/.complete")" ]; then
  echo "    the wheels in $wheels were resolved for Python $(cat "$wheels/.complete"), the image has $image_python:" \
    "remove them and set LLMFLEET_OPEN_WEBUI_DOWNLOAD_PYTHON to a Python $image_python" >&2
  exit 1
fi

started=$SECONDS
if [ "$("${store_podman[@]}" image inspect --format '{{.Id}}' "$base_image" 2>/dev/null)" != "$base_id" ]; then
  echo "    copying $base_image into the stand-in's image store" >&2
  podman save "$base_image" | "${store_podman[@]}" load --quiet >/dev/null
fi

echo "    building $image (open-webui $version, torch $torch_version)" >&2
"${store_podman[@]}" build --quiet "${build_flags[@]}" \
  --build-arg BASE_IMAGE="$base_image" \
  --build-arg OPEN_WEBUI_VERSION="$version" \
  --build-arg TORCH_VERSION="$torch_version" \
  --volume "$wheels:/wheels:ro" \
  --label "org.opencontainers.image.version=$version" \
  --tag "$image" \
  --file "$here/Containerfile" "$here" >/dev/null

# Earlier builds are never used again: keep one stand-in in the store. The upstream name is given to the new build
# only afterwards, since removing an earlier build by force took that name with it.
"${store_podman[@]}" images --format '{{.Repository}}:{{.Tag}}' --filter "reference=$local_repo" \
  | grep -vx "$image" | xargs -r "${store_podman[@]}" rmi --force >/dev/null 2>&1 || true
"${store_podman[@]}" image prune --force >/dev/null 2>&1 || true
"${store_podman[@]}" tag "$image" "$upstream_image:$tag"

echo "    built $image in $((SECONDS - started)) s" \
  "($("${store_podman[@]}" image inspect --format '{{.Size}}' "$image" | awk '{printf "%.0f MB", $1/1e6}'))" >&2
echo "$upstream_image:$tag"
