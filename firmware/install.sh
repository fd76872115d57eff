#!/bin/sh
# Installs firmware/ into a Debian root file system at $1 (the image build's chroot):
# units, settings, the admin account, and no host key or machine identity.
set -eu
root=${1:?usage: firmware/install.sh ROOTFS}
src=$(cd "$(dirname "$0")" && pwd)

install -m 0755 "$src/bin/vipshift" "$src/bin/vipshift-shell" "$root/usr/local/bin/"
install -d "$root/usr/local/libexec/vipshift"
install -m 0755 "$src"/libexec/* "$root/usr/local/libexec/vipshift/"
install -m 0644 "$src"/systemd/*.service "$root/etc/systemd/system/"
install -m 0644 "$src/sysctl.d/90-vipshift.conf" "$root/etc/sysctl.d/"
install -m 0644 "$src/modules-load.d/vipshift.conf" "$root/etc/modules-load.d/"
install -d "$root/etc/systemd/network" "$root/etc/systemd/system/systemd-networkd-wait-online.service.d"
install -m 0644 "$src/network/80-dhcp.network" "$root/etc/systemd/network/"
install -m 0644 "$src/network/wait-online.conf" "$root/etc/systemd/system/systemd-networkd-wait-online.service.d/vipshift.conf"
install -m 0644 "$src/ssh/vipshift.conf" "$root/etc/ssh/sshd_config.d/"
install -m 0440 "$src/sudoers.d/vipshift" "$root/etc/sudoers.d/"
install -d "$root/etc/repart.d" "$root/etc/systemd/system/systemd-repart.service.d"
install -m 0644 "$src/repart.d/50-data.conf" "$root/etc/repart.d/"
install -m 0644 "$src/systemd/repart-before-data.conf" "$root/etc/systemd/system/systemd-repart.service.d/vipshift.conf"

# Partitions by GPT name: the same on every box, whatever the disk is called.
cat > "$root/etc/fstab" <<'FSTAB'
# vipshift appliance: / is the booted system slot (root= on the kernel command line).
PARTLABEL=vs-data    /var/lib/vipshift  ext4  defaults,nodev,nosuid,x-systemd.growfs  0 2
PARTLABEL=vs-esp     /boot/efi          vfat  umask=0077,nodev,nosuid,noexec         0 2
FSTAB
install -d "$root/var/lib/vipshift" "$root/boot/efi"

grep -qx /usr/local/bin/vipshift-shell "$root/etc/shells" || echo /usr/local/bin/vipshift-shell >> "$root/etc/shells"
chroot "$root" sh -eu <<'CHROOT'
id admin >/dev/null 2>&1 || useradd --create-home --groups systemd-journal --shell /usr/local/bin/vipshift-shell --comment 'vipshift administrator' admin
passwd -l admin >/dev/null     # no password: keys only
passwd -l root >/dev/null
systemctl enable systemd-networkd.service ssh.service vipshift-hostkeys.service \
  vipshift-import-config.service vipshift-conntrack-size.service vipshift-slot-health.service \
  vipshift-appliance.service vipshift-keeper.service vipshift-controller.service vipshift-etcd.service \
  systemd-timesyncd.service >/dev/null 2>&1
systemctl enable systemd-networkd-wait-online.service >/dev/null 2>&1 || true
# etcd runs only as the vipshift-etcd role, on the boxes configured for it.
systemctl disable etcd.service >/dev/null 2>&1
systemctl mask etcd.service >/dev/null 2>&1
CHROOT

# The login lands in the console: no Debian banner before it.
rm -f "$root/etc/motd" "$root/etc/update-motd.d/10-uname"

# Nothing that identifies one box: host keys and machine-id are made at first boot.
rm -f "$root"/etc/ssh/ssh_host_*
: > "$root/etc/machine-id"
rm -f "$root/var/lib/dbus/machine-id"
echo vipshift > "$root/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\tvipshift\n::1\tlocalhost ip6-localhost ip6-loopback\n' > "$root/etc/hosts"
