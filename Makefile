# rbuild and the Inception stack.
#   make        the main job: build rbuild, the Debian base image, then every Inception image
#   make test   install what the tests need, then run every check CI runs
# (Pushing to the local registry and running the stack join `make` with the registry client.)

SHELL := /bin/bash
CARGO ?= cargo
RBUILD := target/release/rbuild
# Dockerfiles of the stack, mandatory services then bonus ones.
DOCKERFILES := $(wildcard srcs/requirements/*/Dockerfile srcs/requirements/bonus/*/Dockerfile)
# Images are named as srcs/docker-compose.yml pulls them.
REGISTRY := 127.0.0.1:5000
VERSION := 1.0
BASE := debian:bookworm
# Debian packages the test suite drives for real.
TEST_APT := skopeo umoci busybox-static docker.io mmdebstrap docker-registry
# Seconds the parser fuzz test runs in `make test`.
FUZZ_SECONDS ?= 60

.PHONY: all rbuild deps base images plan test deps-test
all: images

rbuild:
	$(CARGO) build --release --locked -p builder

# Parses and plans each Dockerfile of the stack; any error stops the job.
plan: rbuild
	@if [ -z "$(DOCKERFILES)" ]; then echo "no Dockerfile under srcs/requirements yet"; exit 1; fi
	@for f in $(DOCKERFILES); do \
		$(RBUILD) parse -f $$f > /dev/null || exit 1; \
		printf 'planned %s\n' "$$f"; \
	done

# Debian packages the main job needs on the host.
deps:
	@command -v mmdebstrap >/dev/null || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends mmdebstrap; }

# The base image, from Debian's mirror, when the store lacks it.
base: rbuild deps
	@$(RBUILD) inspect $(BASE) >/dev/null 2>&1 || \
		{ set -o pipefail; mmdebstrap --variant=minbase --quiet bookworm - | $(RBUILD) import - $(BASE); }

# Every image of the stack, built by rbuild (a rebuild with nothing changed is all cache hits).
images: base
	@for f in $(DOCKERFILES); do \
		name=$$(basename $$(dirname $$f)); \
		$(RBUILD) build -f $$f -t $(REGISTRY)/$$name:$(VERSION) || exit 1; \
	done
	@$(RBUILD) images

deps-test:
	@missing=$$(for p in $(TEST_APT); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing: $$missing"; \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	fi
	@command -v cargo-clippy >/dev/null && command -v rustfmt >/dev/null || rustup component add clippy rustfmt

test: deps-test
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings
	RBUILD_FUZZ_SECONDS=$(FUZZ_SECONDS) $(CARGO) test --workspace --locked
