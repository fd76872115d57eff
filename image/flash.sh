#!/usr/bin/env bash
# Writes a vipshift image to a disk: `make flash IMAGE=image/out/vipshift-VERSION-amd64.img DEV=/dev/sdX`.
# Refuses what is not a whole disk, a disk with a mounted partition (or one in use as swap or
# by LVM/RAID: a holder), and the disk this machine runs from. Accepts .img and .img.zst.
set -euo pipefail
IMAGE=${1:-} DEV=${2:-}
die() { echo "flash: $*" >&2; exit 1; }
[ -n "$IMAGE" ] && [ -n "$DEV" ] || die "usage: make flash IMAGE=FILE.img[.zst] DEV=/dev/sdX"
[ -f "$IMAGE" ] || die "$IMAGE: no such image"
[ -b "$DEV" ] || die "$DEV: not a block device"
name=$(basename "$(readlink -f "$DEV")")
[ -d "/sys/block/$name" ] || die "$DEV is a partition: give the whole disk"
[ "$(cat "/sys/block/$name/ro")" = 0 ] || die "$DEV is read-only"

# The disk(s) holding / (through partitions, device mapper or RAID).
root_src=$(findmnt -n -o SOURCE / || true)
root_disks=$(lsblk -n -s -o NAME,TYPE "$root_src" 2>/dev/null | awk '$2 == "disk" { gsub(/[^a-zA-Z0-9]/, "", $1); print $1 }')
for d in $root_disks; do [ "$d" = "$name" ] && die "$DEV holds this machine's root file system"; done
# Any mounted partition, swap or holder on the disk.
if lsblk -n -o MOUNTPOINTS "/dev/$name" 2>/dev/null | grep -q '[^[:space:]]'; then
  die "$DEV has mounted file systems: $(lsblk -n -o NAME,MOUNTPOINTS "/dev/$name" | awk 'NF > 1' | tr '\n' ' ')"
fi
for part in /sys/block/"$name"/"$name"* /sys/block/"$name"; do
  [ -d "$part/holders" ] && [ -n "$(ls "$part/holders")" ] && die "$DEV is in use by $(ls "$part/holders" | tr '\n' ' ')"
done
grep -q "^/dev/$name" /proc/swaps && die "$DEV is used as swap"

case $IMAGE in
  *.zst) size=$(zstd -lv "$IMAGE" 2>/dev/null | awk '/Decompressed Size/ { gsub(/[(),]/, "", $0); for (i = 1; i <= NF; i++) if ($i ~ /^[0-9]+$/ && $(i+1) == "B") print $i }' | tail -1) ;;
  *) size=$(stat -c %s "$IMAGE") ;;
esac
disk_bytes=$(( $(cat "/sys/block/$name/size") * 512 ))
[ -z "$size" ] || [ "$size" -le "$disk_bytes" ] || die "$IMAGE ($size bytes) is larger than $DEV ($disk_bytes bytes)"

echo "writing $IMAGE to $DEV ($(lsblk -dn -o SIZE,MODEL "/dev/$name" | xargs))"
case $IMAGE in
  *.zst) zstd -dc "$IMAGE" | dd of="$DEV" bs=4M conv=fsync oflag=direct status=progress ;;
  *) dd if="$IMAGE" of="$DEV" bs=4M conv=fsync oflag=direct status=progress ;;
esac
sync
echo "done: $DEV holds $(basename "$IMAGE")"
