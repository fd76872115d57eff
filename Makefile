# vipshift — build, test, demo and benchmarks. Every target installs what it needs itself.
SHELL := /bin/bash
.DEFAULT_GOAL := build

APT_PACKAGES := nftables iptables conntrack conntrackd keepalived iproute2 libpcap-dev tcpdump tshark tmux iputils-ping procps
STAMP := node_modules/.vipshift-deps

.PHONY: deps build test test-unit test-integration demo bench-migration lab-up lab-down clean

# Debian packages and node modules, installed once; re-run when package-lock.json changes.
deps: $(STAMP)
$(STAMP): package-lock.json
	@missing=$$(for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages: $$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi
	npm ci --no-audit --no-fund
	@touch $@

build: deps
	npx tsc -p tsconfig.json

test: build
	npx vitest run

test-unit: build
	npx vitest run test/unit

test-integration: build
	npx vitest run test/integration

demo: build
	node dist/cli.js lab demo

bench-migration: build
	npx tsx bench/migration.ts

lab-up: build
	node dist/cli.js lab up

lab-down: build
	node dist/cli.js lab down

clean:
	rm -rf dist

# --- image (issue 8): appliance disk image, flashing, QEMU boot test ---------------------------
IMAGE_APT := debootstrap qemu-system-x86 qemu-utils ovmf grub-pc-bin grub-efi-amd64-bin grub2-common \
  dosfstools mtools gdisk zstd e2fsprogs openssh-client util-linux
IMAGE_VERSION := $(shell node -p "require('./package.json').version" 2>/dev/null)
IMAGE_FILE := image/out/vipshift-$(IMAGE_VERSION)-amd64.img

.PHONY: image-deps image flash test-image bench-image

image-deps:
	@missing=$$(for p in $(IMAGE_APT); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages: $$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

# SSH_AUTHORIZED_KEYS=FILE puts admin keys on the configuration partition.
image: deps image-deps
	SSH_AUTHORIZED_KEYS="$(SSH_AUTHORIZED_KEYS)" bash image/build.sh

# make flash IMAGE=image/out/vipshift-VERSION-amd64.img[.zst] DEV=/dev/sdX
flash:
	bash image/flash.sh "$(IMAGE)" "$(DEV)"

# make flash on loop devices; the image under QEMU (BIOS and UEFI), SSH, firmware update.
test-image: image
	npx vitest run test/integration/image-flash.test.ts test/integration/image-boot.test.ts

bench-image: test-image
	@cat bench/results/image.json
