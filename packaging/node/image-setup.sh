#!/bin/sh
# The last step of a node image build, in the image's root (the Containerfile's RUN,
# `chroot` in python -m nodeimage build): the platform (PLATFORM) into the asset
# manifest, no firmware on a platform without a TEE (QEMU boots the kernel directly),
# the shim entry the host's launcher runs (shim-launcher.sh) replaced by shim.launcher's
# script for this image's python3 and install (python -I -S: no site, no .pth files on
# every task's start; shim/launcher.py), and the handler name the assets hash to into
# /usr/share/contrast/handler.
set -eu
: "${PLATFORM:?PLATFORM is not set}"
share=/usr/share/contrast
sed -i "s/^platform = .*/platform = \"$PLATFORM\"/" $share/manifest.toml
case $PLATFORM in
qemu-insecure)
    # manifest.toml ends with the firmware asset, from its "# firmware:" line on.
    sed -i '/^# firmware:/,$d' $share/manifest.toml
    sed -i '/^firmware = /d' $share/assets/runtime.toml
    rm -f $share/assets/OVMF.fd
    ;;
esac
python3 -m shim.launcher --output /usr/local/bin/containerd-shim-contrast-cc-v2
contrast-node-installer handler --manifest $share/manifest.toml > $share/handler
cat $share/handler
