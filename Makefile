# The two commands of the README:
#   make run   installs what is missing, builds (release) and starts the gateway on conf/gatehouse.yaml
#   make test  installs what the tests need and runs every test
SHELL := /bin/bash
CARGO ?= cargo
CONFIG ?= conf/gatehouse.yaml

# System packages: Pingora's build needs cmake, a C toolchain and OpenSSL headers.
BUILD_PKGS := cmake gcc g++ make pkg-config libssl-dev protobuf-compiler
# What the tests start or use besides the gateway.
TEST_PKGS := curl redis-server etcd-server

.PHONY: run test build deps test-deps check clean

# Installs the Debian packages in $(1) that are missing. Runs `apt-get update` first only
# when the package lists are empty (a fresh machine), or when an install fails.
define apt_install
	@missing=""; for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  sudo=""; [ "$$(id -u)" = 0 ] || sudo=sudo; \
	  echo "installing:$$missing"; \
	  if ! ls /var/lib/apt/lists/*_Packages >/dev/null 2>&1; then $$sudo apt-get update -qq; fi; \
	  DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq --no-install-recommends $$missing \
	  || { $$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq --no-install-recommends $$missing; }; \
	fi
endef

deps:
	$(call apt_install,$(BUILD_PKGS))
	@command -v $(CARGO) >/dev/null || { echo "cargo is needed (https://rustup.rs)"; exit 1; }

test-deps: deps
	$(call apt_install,$(TEST_PKGS))

build: deps
	$(CARGO) build --release --bin gatehouse

run: build
	./target/release/gatehouse -c $(CONFIG)

test: test-deps
	$(CARGO) test --workspace --all-targets
	$(CARGO) test --workspace --doc

check: deps
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

clean:
	$(CARGO) clean
