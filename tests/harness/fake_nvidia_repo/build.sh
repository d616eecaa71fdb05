#!/usr/bin/env bash
# Build a stand-in for NVIDIA's flat CUDA apt repository, for targets that cannot reach the real one.
#
#   build.sh [--out DIR] [--base-url URL] [--distro NAME]
#
# Packages carry NVIDIA's names and Ubuntu's layout (which NVIDIA's repository follows): cuda-keyring,
# nvidia-driver-<branch>[-open] -> nvidia-dkms-<branch>[-open] + nvidia-compute-utils-<branch>, cuda-toolkit-12-6,
# and kernel headers for the running kernel. They hold markers instead of binaries: the DKMS source directory
# /usr/src/nvidia-<version>/dkms.conf (what a reboot would load), /usr/share/llmfleet-fake-nvidia/nvml.json (what NVML
# answers once that module is loaded), and a fake nvidia-persistenced with Ubuntu's unit file.
#
# The repository is signed like NVIDIA's: a throwaway key (kept in DIR/gnupg) signs InRelease, and the fake
# cuda-keyring ships its public half as /usr/share/keyrings/cuda-archive-keyring.gpg. So apt verifies it through
# signed-by exactly as on a real host; nothing is marked trusted=yes.
#
# Two channels come out, each a complete flat repository:
#   DIR/channels/base            what the role installs from
#   DIR/channels/point-release   base plus 560.35.05, a newer release of branch 560 (the test shows the hold keeps it out)
# and DIR/channels.tar holding both, for copying into targets.
#
# Idempotent: a stamp of the inputs skips the build when nothing changed. Needs dpkg-deb, dpkg-scanpackages
# (package dpkg-dev) and gpg. The last line printed is "built" or "unchanged".
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../../.." && pwd)
out="$repo/.cache/fake_nvidia_repo"
base_url="http://127.0.0.1:8088/"
distro="debian12"
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out=$2; shift 2 ;;
    --base-url) base_url=$2; shift 2 ;;
    --distro) distro=$2; shift 2 ;;
    *) echo "usage: $0 [--out DIR] [--base-url URL] [--distro NAME]" >&2; exit 2 ;;
  esac
done
case "$base_url" in */) ;; *) base_url="$base_url/" ;; esac

for tool in dpkg-deb dpkg-scanpackages gpg; do
  command -v "$tool" >/dev/null || { echo "$tool is missing: apt-get install dpkg-dev gnupg" >&2; exit 1; }
done

# The driver branches the repository offers: branch, version, CUDA version NVML reports (as an integer).
drivers=(
  "550 550.144.03 12040"
  "560 560.35.03 12060"
  "570 570.133.20 12080"
  "580 580.95.05 13000"
)
point_release="560 560.35.05 12060"
keyring_version="1.1-1"
toolkit_version="12.6.3-1"
kernel_release=$(uname -r)
# Kernel releases may hold characters package names may not; the role asks for the lowercase form too.
headers_package="linux-headers-$(printf '%s' "$kernel_release" | tr 'A-Z_' 'a-z-')"

stamp_file="$out/stamp"
stamp=$( { cat "$0" "$here"/payload/*; echo "$base_url $distro $kernel_release ${drivers[*]} $point_release"; } | sha256sum | cut -c1-16)
if [ -f "$stamp_file" ] && [ "$(cat "$stamp_file")" = "$stamp" ] \
   && [ -f "$out/channels.tar" ]; then
  echo "unchanged"
  exit 0
fi

rm -rf "$out/debs" "$out/channels" "$out/channels.tar" "$out/stage"
mkdir -p "$out/debs" "$out/stage" "$out/gnupg"
chmod 0700 "$out/gnupg"
export GNUPGHOME="$out/gnupg"
trap 'gpgconf --kill gpg-agent >/dev/null 2>&1 || true; rm -rf "$out/stage"' EXIT
key_uid="llmfleet fake NVIDIA CUDA repository <fake-cuda-repo@llmfleet.invalid>"
if ! gpg --batch --list-secret-keys "$key_uid" >/dev/null 2>&1; then
  gpg --batch --quiet --passphrase '' --quick-gen-key "$key_uid" ed25519 sign never
fi

# build_deb NAME VERSION ARCH "EXTRA CONTROL LINES": the payload is whatever the caller put in $out/stage/NAME.
build_deb() {
  local name=$1 version=$2 arch=$3 extra=$4 root="$out/stage/$1"
  mkdir -p "$root/DEBIAN" "$root/usr/share/doc/$name"
  printf 'Fake %s %s for the llmfleet.workstation tests; holds no NVIDIA software.\n' "$name" "$version" \
    >"$root/usr/share/doc/$name/README.llmfleet"
  {
    echo "Package: $name"
    echo "Version: $version"
    echo "Architecture: $arch"
    echo "Maintainer: llmfleet.workstation tests <fake-cuda-repo@llmfleet.invalid>"
    echo "Section: non-free/libs"
    echo "Priority: optional"
    [ -n "$extra" ] && printf '%s\n' "$extra"
    echo "Description: stand-in for NVIDIA's $name"
    echo " Built by tests/harness/fake_nvidia_repo/build.sh; it carries version markers only."
  } >"$root/DEBIAN/control"
  dpkg-deb --root-owner-group -Zgzip -z1 --build "$root" "$out/debs/${name}_${version}_${arch}.deb" >/dev/null
  rm -rf "$root"
}

# cuda-keyring: the signing key, the sources entry pointing at the base URL, and NVIDIA's pin (priority 600).
root="$out/stage/cuda-keyring"
mkdir -p "$root/usr/share/keyrings" "$root/etc/apt/sources.list.d" "$root/etc/apt/preferences.d" "$root/DEBIAN"
gpg --batch --export "$key_uid" >"$root/usr/share/keyrings/cuda-archive-keyring.gpg"
echo "deb [signed-by=/usr/share/keyrings/cuda-archive-keyring.gpg] $base_url /" \
  >"$root/etc/apt/sources.list.d/cuda-$distro-x86_64.list"
printf 'Package: *\nPin: release l=NVIDIA CUDA\nPin-Priority: 600\n' >"$root/etc/apt/preferences.d/cuda-repository-pin-600"
printf '/etc/apt/sources.list.d/cuda-%s-x86_64.list\n/etc/apt/preferences.d/cuda-repository-pin-600\n' "$distro" \
  >"$root/DEBIAN/conffiles"
build_deb cuda-keyring "$keyring_version" all ""

# driver_branch BRANCH VERSION CUDA: the packages of one driver release, in both kernel-module flavours.
driver_branch() {
  local branch=$1 upstream=$2 cuda=$3 version="$2-1" flavor root
  root="$out/stage/nvidia-compute-utils-$branch"
  mkdir -p "$root/usr/bin" "$root/usr/lib/systemd/system" "$root/DEBIAN"
  cp "$here/payload/nvidia-persistenced" "$root/usr/bin/nvidia-persistenced"
  cp "$here/payload/nvidia-persistenced.service" "$root/usr/lib/systemd/system/nvidia-persistenced.service"
  cp "$here/payload/compute-utils.postinst" "$root/DEBIAN/postinst"
  build_deb "nvidia-compute-utils-$branch" "$version" amd64 \
    "$(printf 'Provides: nvidia-compute-utils\nConflicts: nvidia-compute-utils\nReplaces: nvidia-compute-utils')"
  for flavor in "" "-open"; do
    root="$out/stage/nvidia-dkms-$branch$flavor"
    mkdir -p "$root/usr/src/nvidia-$upstream"
    printf 'PACKAGE_NAME="nvidia"\nPACKAGE_VERSION="%s"\nAUTOINSTALL="yes"\n' "$upstream" \
      >"$root/usr/src/nvidia-$upstream/dkms.conf"
    # Which report the fake reboot writes: the open modules say "Open Kernel Module for x86_64".
    [ -n "$flavor" ] && echo 'LLMFLEET_FAKE_FLAVOR="open"' >>"$root/usr/src/nvidia-$upstream/dkms.conf"
    build_deb "nvidia-dkms-$branch$flavor" "$version" amd64 \
      "$(printf 'Provides: nvidia-dkms-kernel\nConflicts: nvidia-dkms-kernel\nReplaces: nvidia-dkms-kernel')"

    root="$out/stage/nvidia-driver-$branch$flavor"
    mkdir -p "$root/usr/share/llmfleet-fake-nvidia"
    printf '{"driver_version": "%s", "cuda_driver_version": %s, "nvml_version": "12.%s"}\n' "$upstream" "$cuda" "$upstream" \
      >"$root/usr/share/llmfleet-fake-nvidia/nvml.json"
    build_deb "nvidia-driver-$branch$flavor" "$version" amd64 "$(printf '%s\n%s\n%s\n%s' \
      "Depends: nvidia-dkms-$branch$flavor (= $version), nvidia-compute-utils-$branch (= $version)" \
      "Provides: nvidia-driver-binary" "Conflicts: nvidia-driver-binary" "Replaces: nvidia-driver-binary")"
  done
}
for release in "${drivers[@]}"; do
  # shellcheck disable=SC2086  # three words: branch, version, CUDA
  driver_branch $release
done

root="$out/stage/cuda-toolkit-12-6"
mkdir -p "$root/usr/local/cuda-12.6"
printf '{"cuda": {"name": "CUDA SDK", "version": "%s"}}\n' "${toolkit_version%-*}" >"$root/usr/local/cuda-12.6/version.json"
build_deb cuda-toolkit-12-6 "$toolkit_version" amd64 ""

root="$out/stage/$headers_package"
mkdir -p "$root/usr/src/$headers_package"
build_deb "$headers_package" "1.0-1" amd64 ""

# channel NAME DATE DEBS...: a signed flat repository holding those packages, dated DATE. Its files carry that
# date as their mtime: apt asks with If-Modified-Since, so a channel published later must look newer.
channel() {
  local name=$1 date=$2 dir="$out/channels/$1"
  shift 2
  mkdir -p "$dir"
  cp "$@" "$dir/"
  (
    cd "$dir"
    dpkg-scanpackages --multiversion . /dev/null 2>/dev/null >Packages
    gzip -9nk Packages
    {
      echo "Origin: NVIDIA"
      echo "Label: NVIDIA CUDA"
      echo "Date: $(date -u -R -d "$date")"
      echo "SHA256:"
      for index in Packages Packages.gz; do
        printf ' %s %s %s\n' "$(sha256sum "$index" | cut -d' ' -f1)" "$(stat -c %s "$index")" "$index"
      done
    } >Release
    gpg --batch --yes --quiet --local-user "$key_uid" --clearsign -o InRelease Release
    touch -d "$date" ./*
  )
  echo "    channel $name: $(grep -c '^Package:' "$dir/Packages") packages"
}
mapfile -t base_debs < <(find "$out/debs" -name '*.deb' | sort)

# shellcheck disable=SC2086  # three words: branch, version, CUDA
driver_branch $point_release
mapfile -t point_debs < <(find "$out/debs" -name '*.deb' | sort)
channel base "2025-11-01 00:00:00 UTC" "${base_debs[@]}"
channel point-release "2025-11-02 00:00:00 UTC" "${point_debs[@]}"
# One file for the targets: copying a tarball is one transfer, copying the tree is one per package.
tar -C "$out" -cf "$out/channels.tar" channels

echo "$stamp" >"$stamp_file"
echo "built"
