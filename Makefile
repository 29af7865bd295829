# rbuild and the Inception stack.
#   make          the main job (= all): tools, base image, every image built by rbuild, pushed
#                 to the local registry, and the stack run by compose from that registry
#   make test     install what the tests need, then run every check CI runs
# Stack targets: build push up down clean fclean re logs status check secrets registry.

SHELL := /bin/bash
CARGO ?= cargo
RBUILD ?= $(CURDIR)/target/release/rbuild
COMPOSE_FILE := srcs/docker-compose.yml
# Images are named as the compose file names them: $(REGISTRY)/<service>:<version>.
REGISTRY := 127.0.0.1:5000
BASE := debian:bookworm
# A rootfs tarball to import instead of running mmdebstrap (the tests pass a cached one).
BASE_TAR ?=
# The stack's host data: the volumes' bind directories and the registry's storage.
LOGIN := $(shell sed -n 's/^LOGIN=//p' srcs/.env | tail -n1)
DATA := /home/$(LOGIN)/data
REGISTRY_DIR := $(DATA)/registry
REGISTRY_PID := $(REGISTRY_DIR)/registry.pid
DOCKERD_PID := /run/rbuild-inception-dockerd.pid
SECRETS := db_root_password db_password wp_admin_password wp_user_password ftp_password
# `docker compose` (v2) when the docker CLI has it, else Debian's docker-compose (1.29).
COMPOSE := $(shell docker compose version >/dev/null 2>&1 && echo "docker compose" || echo docker-compose) -f $(COMPOSE_FILE)
# Debian packages: the stack's tools, and those the test suite drives for real.
STACK_APT := docker.io docker-compose docker-registry mmdebstrap curl openssl
TEST_APT := $(STACK_APT) skopeo umoci busybox-static
# Seconds the parser fuzz test runs in `make test`.
FUZZ_SECONDS ?= 60

.PHONY: all rbuild deps docker base build registry push secrets up down clean fclean re \
	logs status check plan test deps-test
all: deps base build push up

# Builds target/release/rbuild, unless RBUILD names another binary (the tests pass theirs).
rbuild:
ifeq ($(RBUILD),$(CURDIR)/target/release/rbuild)
	$(CARGO) build --release --locked -p builder
endif

# Installs what a Debian host lacks, and starts dockerd (its PID in $(DOCKERD_PID)) when no
# engine answers.
deps:
	@missing=$$(for p in $(STACK_APT); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing: $$missing"; \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	fi
	@$(MAKE) --no-print-directory docker

docker:
	@docker info >/dev/null 2>&1 || { \
		echo "starting dockerd (PID in $(DOCKERD_PID), log in /var/log/rbuild-inception-dockerd.log)"; \
		dockerd >/var/log/rbuild-inception-dockerd.log 2>&1 & echo $$! > $(DOCKERD_PID); \
		for i in $$(seq 60); do docker info >/dev/null 2>&1 && exit 0; sleep 1; done; \
		echo "dockerd did not answer within 60 s: see /var/log/rbuild-inception-dockerd.log"; exit 1; }

# The base image, from Debian's mirror, when the store lacks it.
base: rbuild
	@$(RBUILD) inspect $(BASE) >/dev/null 2>&1 || { set -o pipefail; \
		if [ -n "$(BASE_TAR)" ]; then $(RBUILD) import $(BASE_TAR) $(BASE); \
		else mmdebstrap --variant=minbase --quiet bookworm - | $(RBUILD) import - $(BASE); fi; }

# Every image of the stack, built by rbuild in one process (a rebuild with nothing changed is
# all cache hits).
build: base
	$(RBUILD) bake -f $(COMPOSE_FILE)

# Debian's docker-registry on 127.0.0.1:5000, storage under $(REGISTRY_DIR), PID recorded.
registry:
	@if [ -f $(REGISTRY_PID) ] && kill -0 $$(cat $(REGISTRY_PID)) 2>/dev/null; then exit 0; fi; \
	mkdir -p $(REGISTRY_DIR)/storage; \
	printf 'version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: %s\n  delete:\n    enabled: true\nhttp:\n  addr: $(REGISTRY)\n' \
		$(REGISTRY_DIR)/storage > $(REGISTRY_DIR)/config.yml; \
	docker-registry serve $(REGISTRY_DIR)/config.yml >>$(REGISTRY_DIR)/registry.log 2>&1 & echo $$! > $(REGISTRY_PID); \
	for i in $$(seq 50); do curl -sf http://$(REGISTRY)/v2/ >/dev/null && exit 0; sleep 0.2; done; \
	echo "the registry did not answer on $(REGISTRY): see $(REGISTRY_DIR)/registry.log"; exit 1

push: build registry
	$(RBUILD) bake -f $(COMPOSE_FILE) --push

# Random passwords for the secrets that do not exist yet (never committed: /secrets/ is ignored).
secrets:
	@mkdir -p secrets && chmod 700 secrets
	@for s in $(SECRETS); do \
		[ -s secrets/$$s.txt ] || { head -c 18 /dev/urandom | base64 | tr -d '/+=' > secrets/$$s.txt; chmod 600 secrets/$$s.txt; echo "generated secrets/$$s.txt"; }; \
	done

# compose pulls every image from the registry, then runs the stack (never builds it).
up: secrets registry
	@mkdir -p $(DATA)/mariadb $(DATA)/wordpress
	$(COMPOSE) pull
	$(COMPOSE) up -d --no-build

down:
	-$(COMPOSE) down
	@if [ -f $(REGISTRY_PID) ]; then kill $$(cat $(REGISTRY_PID)) 2>/dev/null; rm -f $(REGISTRY_PID); echo "registry stopped"; fi

# The stack's containers and network go, and rbuild's build cache.
clean: down
	-$(RBUILD) prune

# Everything the stack made: its images (docker's and rbuild's), volumes, data and registry.
fclean: clean
	-$(COMPOSE) down --volumes --rmi all
	-docker volume rm mariadb_data wordpress_files 2>/dev/null
	-for i in $$(sed -n "s/^ *image: *//p" $(COMPOSE_FILE)); do $(RBUILD) rmi $$i 2>/dev/null; done; true
	rm -rf $(DATA)

re: fclean all

logs:
	$(COMPOSE) logs --tail=200

status:
	@$(COMPOSE) ps
	@if [ -f $(REGISTRY_PID) ] && kill -0 $$(cat $(REGISTRY_PID)) 2>/dev/null; then \
		echo "registry: running (PID $$(cat $(REGISTRY_PID))) on $(REGISTRY): $$(curl -s http://$(REGISTRY)/v2/_catalog)"; \
	else echo "registry: stopped"; fi
	@$(RBUILD) images

# The stack's checks over 127.0.0.1 (srcs/check.sh).
check:
	COMPOSE="$(COMPOSE)" srcs/check.sh

# Parses and plans each Dockerfile of the stack; any error stops the job.
plan: rbuild
	@for f in $(wildcard srcs/requirements/*/Dockerfile srcs/requirements/bonus/*/Dockerfile); do \
		$(RBUILD) parse -f $$f > /dev/null || exit 1; printf 'planned %s\n' "$$f"; done

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
