# rbuild and the Inception stack.
#   make        the main job: build rbuild, then plan every Inception image with it
#   make test   install what the tests need, then run every check CI runs
# (Building, pushing and running the stack join `make` as the executor and registry land.)

SHELL := /bin/bash
CARGO ?= cargo
RBUILD := target/release/rbuild
# Dockerfiles of the stack, mandatory services then bonus ones.
DOCKERFILES := $(wildcard srcs/requirements/*/Dockerfile srcs/requirements/bonus/*/Dockerfile)
# Debian packages the test suite drives for real.
TEST_APT := skopeo umoci busybox-static docker.io mmdebstrap
# Seconds the parser fuzz test runs in `make test`.
FUZZ_SECONDS ?= 60

.PHONY: all rbuild plan test deps-test
all: plan

rbuild:
	$(CARGO) build --release --locked -p builder

# Parses and plans each Dockerfile of the stack; any error stops the job.
plan: rbuild
	@if [ -z "$(DOCKERFILES)" ]; then echo "no Dockerfile under srcs/requirements yet"; exit 1; fi
	@for f in $(DOCKERFILES); do \
		$(RBUILD) parse -f $$f > /dev/null || exit 1; \
		printf 'planned %s\n' "$$f"; \
	done

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
