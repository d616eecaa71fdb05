#!/usr/bin/env bash
# Build the systemd-capable target image that every molecule scenario boots, without a registry:
# debootstrap a minimal Debian 12 rootfs and import it into podman.
#
# The image is tagged with a hash of this recipe, so it is built once and rebuilt only when the
# recipe changes; `localhost/llmfleet-target:latest` always points at the current recipe's build.
set -euo pipefail

image_repo=localhost/llmfleet-target
suite=bookworm
mirror=${LLMFLEET_DEBIAN_MIRROR:-http://deb.debian.org/debian}
# What a converged workstation needs before our roles run: systemd as PID 1, Python for Ansible
# (python3-apt for the apt module), sudo for become, pip/venv for the engine roles, and the tools the
# roles and tests call (iproute2 for ss, curl for health probes, procps for ps), libnuma1 for the CPU build of
# vLLM that the serving tests run (the vllm role installs it too; having it here keeps targets offline).
packages=systemd,systemd-sysv,dbus,python3,python3-apt,python3-pip,python3-venv,sudo,iproute2,ca-certificates,curl,procps,gnupg,rsync,openssh-client,libnuma1

recipe_hash=$( { cat "$0"; echo "$suite $packages"; } | sha256sum | cut -c1-12)
image="$image_repo:$recipe_hash"

if podman image exists "$image"; then
  echo "    target image $image is current (recipe unchanged)"
  podman tag "$image" "$image_repo:latest"
  exit 0
fi

workdir=$(mktemp -d /var/tmp/llmfleet-rootfs.XXXXXX)
trap 'rm -rf "$workdir"' EXIT
echo "    debootstrap $suite ($packages) into $workdir"
debootstrap --variant=minbase --include="$packages" "$suite" "$workdir/rootfs" "$mirror" \
  >"$workdir/debootstrap.log" 2>&1 || { tail -n 30 "$workdir/debootstrap.log"; exit 1; }

rootfs="$workdir/rootfs"
# A container has no console gettys, no hardware clock and no udev to wait for; masking these keeps
# `systemctl is-system-running` at "running" instead of "degraded".
for unit in getty@tty1.service console-getty.service systemd-udevd.service systemd-udev-trigger.service \
            systemd-hwdb-update.service sys-kernel-debug.mount sys-kernel-tracing.mount \
            systemd-remount-fs.service systemd-firstboot.service; do
  ln -sf /dev/null "$rootfs/etc/systemd/system/$unit"
done
# Ansible connects as root through podman exec; keep apt lean and make the image reproducible.
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/archives/*.deb
echo "llmfleet-target" >"$rootfs/etc/hostname"

echo "    importing rootfs as $image"
tar -C "$rootfs" -c . | podman import --quiet --change 'CMD ["/sbin/init"]' --change 'STOPSIGNAL SIGRTMIN+3' - "$image" >/dev/null
podman tag "$image" "$image_repo:latest"
echo "    built $image ($(podman image inspect --format '{{.Size}}' "$image" | awk '{printf "%.0f MB", $1/1e6}'))"
