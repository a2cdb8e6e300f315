#!/bin/busybox sh
# /init of the contrast pod-VM initrd: verity root, then switch_root.
# Every failure prints one "contrast-initrd:" line on the console and powers off.
/bin/busybox mkdir -p /proc /sys /dev /newroot /sbin /usr/bin /usr/sbin
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev

fail() {
    echo "contrast-initrd: $*" >/dev/console
    echo "contrast-initrd: powering off" >/dev/console
    sync
    poweroff -f
    sleep 5
}

# The module names a list of the initrd's (one path per line) holds, space-separated.
module_names() {
    names=""
    while read -r module; do
        module="${module##*/}"
        names="$names ${module%.ko}"
    done <"$1"
}

# All in one modprobe (one exec; each costs tens of ms under TCG), in the order of
# modules.order (dependencies first); the initrd's modules.dep names no dependencies.
module_names /etc/modules.order
# shellcheck disable=SC2086  # one argument per module
modprobe -a $names || fail "cannot load the kernel modules$names"

# Optional: the CPU's fastest sha256 for dm-verity (guest/image/kernel.py); verity
# falls back to the built-in sha256-generic without it.
module_names /etc/modules.optional
if [ -n "$names" ]; then
    # shellcheck disable=SC2086  # one argument per module
    modprobe -a $names 2>/dev/null ||
        echo "contrast-initrd: optional modules$names not loaded; verity uses generic sha256" >/dev/console
fi

roothash="" blocks="" hashoffset="" salt=""
read -r cmdline </proc/cmdline
# shellcheck disable=SC2086  # split into its parameters
for arg in $cmdline; do
    case "$arg" in
        contrast.verity.roothash=*) roothash="${arg#*=}" ;;
        contrast.verity.blocks=*) blocks="${arg#*=}" ;;
        contrast.verity.hashoffset=*) hashoffset="${arg#*=}" ;;
        contrast.verity.salt=*) salt="${arg#*=}" ;;
    esac
done
[ -n "$roothash" ] && [ -n "$blocks" ] && [ -n "$hashoffset" ] && [ -n "$salt" ] ||
    fail "dm-verity parameters missing from the kernel command line"

# The root disk is the virtio-blk device whose serial is contrast-root, wherever
# PCI enumeration put it.
rootdev=""
tries=0
while [ -z "$rootdev" ]; do
    for serial in /sys/block/vd*/serial; do
        [ -e "$serial" ] || continue
        name=""
        read -r name <"$serial"  # the shell's read: no cat exec per device
        if [ "$name" = "contrast-root" ]; then
            dev="${serial%/serial}"
            rootdev="/dev/${dev##*/}"
        fi
    done
    [ -n "$rootdev" ] && break
    tries=$((tries + 1))
    [ "$tries" -gt 200 ] && fail "root disk (serial contrast-root) not found"
    sleep 0.05
done

# The verity table straight from the (measured) command line: data and hash tree
# share the device, the tree starts at hashoffset; 4 KiB blocks; sha256; any
# corrupted block panics the kernel. No udev here: libdevmapper makes the node itself.
export DM_DISABLE_UDEV=1
table="0 $((blocks * 8)) verity 1 $rootdev $rootdev 4096 4096 $blocks $((hashoffset / 4096))"
table="$table sha256 $roothash $salt 1 panic_on_corruption"
dmsetup create root --readonly --noudevsync --uuid "CONTRAST-VERITY-$roothash" --table "$table" >/dev/console 2>&1 ||
    fail "dm-verity: cannot set up the verity device over $rootdev"

# A corrupted block panics the kernel (panic-on-corruption); a mount that fails
# for any other reason is reported here.
mount -t erofs -o ro /dev/mapper/root /newroot ||
    fail "dm-verity: mounting the verified root failed"

# Start reading the files the root's boot needs next on the other vCPU (see
# contrast-init.sh); chrooted, it keeps reading the new root after switch_root.
chroot /newroot /sbin/contrast-init prefetch </dev/null >/dev/null 2>&1 &

mount --move /dev /newroot/dev
mount --move /sys /newroot/sys
mount --move /proc /newroot/proc
exec switch_root /newroot /sbin/contrast-init
