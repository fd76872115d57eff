# vipshift — build, test, demo and benchmarks. Every target installs what it needs itself.
SHELL := /bin/bash
.DEFAULT_GOAL := build

APT_PACKAGES := nftables iptables conntrack conntrackd keepalived iproute2 libpcap-dev tcpdump tshark tmux iputils-ping procps hping3 prometheus etcd-server
STAMP := node_modules/.vipshift-deps

.PHONY: deps build typecheck layers test test-unit test-integration demo bench-migration lab-up lab-down clean

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

# tsconfig.json builds src/ only; vitest and tsx strip the types of test/ and bench/ without
# checking them, so the whole tree is type-checked here first.
typecheck: deps
	npx tsc -p tsconfig.check.json

# The layer rule of src/ (.dependency-cruiser.cjs, docs/architecture.md): an upward import or a
# cycle fails the build.
layers: deps
	npx depcruise src --config .dependency-cruiser.cjs --output-type err

test: build typecheck layers
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

# lab
.PHONY: test-lab bench-lab
test-lab: build
	npx vitest run test/unit/lab-site.test.ts test/integration/lab-up.test.ts test/integration/lab-down.test.ts test/integration/lab-traffic.test.ts

bench-lab: build
	npx tsx bench/lab.ts
# nat — the appliance's NAT engine (nftables, hold queue)
.PHONY: test-nat
test-nat: build
	npx vitest run test/unit/nat-config.test.ts test/unit/nat-ruleset.test.ts test/unit/nat-queue.test.ts
	npx vitest run test/integration/nat-engine.test.ts
# netlink (ctnetlink access table, rtnetlink addresses)
.PHONY: test-netlink bench-conntrack
test-netlink: build
	npx vitest run test/unit/netlink-ctnetlink.test.ts test/unit/netlink-entry-record.test.ts test/unit/netlink-route.test.ts test/integration/netlink-conntrack.test.ts test/integration/netlink-route.test.ts

bench-conntrack: build
	npx tsx bench/conntrack.ts
# controller — journal, statistics, rebalancing, authentication of every route
.PHONY: test-controller
test-controller: build
	npx vitest run test/unit/controller-journal.test.ts test/unit/controller-statistics.test.ts test/unit/controller-auth.test.ts test/unit/api-assignment.test.ts
	npx vitest run test/integration/controller-journal.test.ts test/integration/controller-rebalance.test.ts test/integration/controller-auth.test.ts
# --- vrrp (src/vrrp: the VRRPv3 speaker) ---
.PHONY: bench-vrrp bench-vrrp-stall test-vrrp
bench-vrrp: build
	npx tsx bench/vrrp.ts

bench-vrrp-stall: build
	npx tsx bench/vrrp-stall.ts

test-vrrp: build
	npx vitest run test/unit/vrrp-advert.test.ts test/unit/vrrp-state-machine.test.ts test/unit/vrrp-config.test.ts test/unit/vrrp-speaker.test.ts test/integration/vrrp-keepalived.test.ts

# console — operator console, metrics, logs
.PHONY: test-console bench-console console-screenshot
test-console: build
	npx vitest run test/unit/console-access-page.test.ts test/unit/console-model.test.ts
	npx vitest run test/integration/console-tmux.test.ts

bench-console: build
	npx tsx bench/console.ts

# Debian's chromium renders the capture (installed here if missing).
console-screenshot: build
	@command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null)
	npx tsx scripts/console-screenshot.ts
# benchmig — where a migration's time goes, part by part (bench-migration itself is above)
.PHONY: bench-migration-profile test-benchmig
bench-migration-profile: build
	npx tsx bench/migration-profile.ts

test-benchmig: build
	npx vitest run test/unit/benchmig-conntrackd.test.ts


# keeper
.PHONY: test-keeper bench-keeper
test-keeper: build
	npx vitest run test/unit/keeper-store.test.ts test/unit/keeper-api.test.ts test/unit/keeper-sockdiag.test.ts test/integration/keeper.test.ts

bench-keeper: build
	npx tsx bench/keeper.ts
# replication — table copies on the keepers, takeover from them (failover, issue 5)
.PHONY: test-replication bench-failover bench-replication
test-replication: build
	npx vitest run test/unit/replication-backlog.test.ts
	npx vitest run test/integration/replication-keepers.test.ts test/integration/replication-failover.test.ts

bench-failover: build
	npx tsx bench/failover.ts

bench-replication: build
	npx tsx bench/replication.ts
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

# FIRMWARE_KEY=FILE (required) signs the image: an Ed25519 private key in PEM, kept outside the
# repository (openssl genpkey -algorithm ed25519 -out FILE); the box takes updates signed by it.
# SSH_AUTHORIZED_KEYS=FILE puts admin keys on the configuration partition.
image: deps image-deps
	FIRMWARE_KEY="$(FIRMWARE_KEY)" SSH_AUTHORIZED_KEYS="$(SSH_AUTHORIZED_KEYS)" bash image/build.sh

# make flash IMAGE=image/out/vipshift-VERSION-amd64.img[.zst] DEV=/dev/sdX
flash:
	bash image/flash.sh "$(IMAGE)" "$(DEV)"

# make flash on loop devices; the image under QEMU (BIOS and UEFI), SSH, firmware update.
# Without FIRMWARE_KEY the image is signed with a throwaway key, deleted once it is built (the
# test signs its updates with a key of its own, which it puts on the configuration partition).
test-image: deps image-deps
	@key="$(FIRMWARE_KEY)"; tmp=; \
	if [ -z "$$key" ]; then \
	  tmp=$$(mktemp -d); key=$$tmp/throwaway-firmware.pem; \
	  node -e 'process.stdout.write(require("node:crypto").generateKeyPairSync("ed25519").privateKey.export({ type: "pkcs8", format: "pem" }))' > "$$key"; \
	  echo "test-image: signing the image with a throwaway key"; \
	fi; \
	$(MAKE) --no-print-directory image FIRMWARE_KEY="$$key"; rc=$$?; \
	[ -z "$$tmp" ] || rm -rf "$$tmp"; exit $$rc
	npx vitest run test/integration/image-flash.test.ts test/integration/image-boot.test.ts

bench-image: test-image
	@cat bench/results/image.json
# api: the assignment algorithm's benchmark
.PHONY: bench-assign
bench-assign: build
	npx tsx bench/assign.ts
# bfd — VRRP with BFD (RFC 5880/5881) between the appliances
.PHONY: test-bfd bench-bfd
test-bfd: build
	npx vitest run test/unit/vrrp-bfd-packet.test.ts test/unit/vrrp-bfd-session.test.ts test/unit/vrrp-bfd-speaker.test.ts test/unit/vrrp-bfd-config.test.ts
	npx vitest run test/integration/vrrp-bfd.test.ts

bench-bfd: build
	npx tsx bench/bfd.ts
# health — backends' health checks (src/health)
.PHONY: test-health bench-health-checks bench-health-removal
test-health: build
	npx vitest run test/unit/config-check.test.ts test/unit/health-state.test.ts test/unit/health-monitor.test.ts test/unit/health-checkers.test.ts test/unit/config-check-fuzz.test.ts test/unit/controller-backends.test.ts test/unit/console-model.test.ts
	npx vitest run test/integration/health-checks.test.ts

bench-health-checks: build
	npx tsx bench/health-checks.ts

bench-health-removal: build
	npx tsx bench/health-removal.ts
# keepalived — keepalived.conf as the appliance: import, check, VRRPv2 and virtual MAC beside keepalived
.PHONY: test-keepalived bench-keepalived-vrrp
test-keepalived: build
	npx vitest run test/unit/keepalived-import.test.ts test/unit/keepalived-fuzz.test.ts test/unit/keepalived-tokenizer.test.ts test/unit/cli-check.test.ts
	npx vitest run test/integration/vrrp-keepalived-versions.test.ts
	npx vitest run test/integration/keepalived-appliance.test.ts

bench-keepalived-vrrp: build
	npx tsx bench/vrrp.ts --v2
	npx tsx bench/vrrp.ts --v2 --vmac
	npx tsx bench/vrrp.ts --vmac 0.1
# synflood — SYN flood protection, junk kept out of replication and migrations, a full table
.PHONY: test-synflood bench-synflood
test-synflood: build
	npx vitest run test/unit/netlink-entry-connection.test.ts test/unit/nat-flood.test.ts test/unit/appliance-table-watch.test.ts
	npx vitest run test/integration/synflood.test.ts

bench-synflood: build
	npx tsx bench/synflood.ts
	ROUNDS=2 npx tsx bench/synflood.ts --migration
# trust — roles on every route, API connection limits, replay, the Prometheus scrape, hooks
.PHONY: test-trust bench-api-latency
test-trust: build
	npx vitest run test/unit/controller-auth.test.ts test/unit/api-auth.test.ts test/unit/api-frames.test.ts test/unit/api-roles-doc.test.ts test/unit/appliance-hooks.test.ts test/unit/appliance-peers.test.ts test/unit/metrics-listener.test.ts
	npx vitest run test/integration/api-limits.test.ts
	npx vitest run test/integration/metrics-prometheus.test.ts

bench-api-latency: build
	npx tsx bench/api-latency.ts
# safe defaults — failover on by default, entries checked at the boundary, processes that come back
.PHONY: test-defaults
test-defaults: build
	npx vitest run test/unit/vip-records.test.ts test/unit/replication-backlog.test.ts test/unit/vrrp-speaker.test.ts test/unit/image-firmware.test.ts test/unit/firmware-signature.test.ts test/unit/vrrp-bfd-session.test.ts test/unit/nat-config.test.ts test/unit/keepalived-tokenizer.test.ts
	npx vitest run test/integration/entries-boundary.test.ts test/integration/import-config.test.ts
	npx vitest run test/integration/appliance-restart.test.ts
	npx vitest run test/integration/replication-failover.test.ts -t "default lab"
# backends — pools, schedulers (Maglev), drain, reload (src/nat/pool.ts, scheduler.ts, config/edit.ts)
.PHONY: test-backends bench-backends
test-backends: build
	npx vitest run test/unit/backends-scheduler.test.ts test/unit/backends-edit.test.ts test/unit/nat-config.test.ts test/unit/nat-ruleset.test.ts
	npx vitest run test/integration/backends.test.ts

bench-backends: build
	npx tsx bench/backends.ts

# Controllers on etcd: journal write cost etcd vs SQLite
bench-controller-journal: build
	npx tsx bench/controller-journal.ts

test-controller-ha: build
	npx vitest run test/integration/controller-etcd.test.ts
	npx vitest run test/integration/controller-ha.test.ts

# Controllers on etcd: the leader SIGKILLed in a migration, takeover under live connections
bench-controller-ha: build
	npx tsx bench/controller-ha.ts

# Pre-copy at scale: 250 VRRP instances at 0.1 s adverts (vipshift and keepalived); 1,000,000 entries
.PHONY: bench-vrrp-scale bench-migration-million
bench-vrrp-scale: build
	npx tsx bench/vrrp-scale.ts

bench-migration-million: build
	BIG_TABLES=1 SIZES=1000000 ROUNDS=1 OUT=migration-1000000 npx tsx bench/migration.ts

# Drain at scale: lb1 owning VIPS (default 125) VIPs with ENTRIES (1,000) entries each, drained to lb2
.PHONY: bench-drain
bench-drain: build
	npx tsx bench/drain.ts
