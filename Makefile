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

# api: the assignment algorithm's benchmark
.PHONY: bench-assign
bench-assign: build
	npx tsx bench/assign.ts
