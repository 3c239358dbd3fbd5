# BitBuilder's build, run and test entry points. `make run` and `make test` are the two
# commands of README.md's quick start; both do all set-up on a fresh Debian machine.

GO        ?= go
PREFIX    ?= /usr
DESTDIR   ?=
VERSION   ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
# One version for every binary of a build: the daemon's (GetInfo, --version) and bbctl's.
LDFLAGS   := -X github.com/bitbuilder/bitbuilder/daemon.Version=$(VERSION) -X main.version=$(VERSION)
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2
GOTESTFLAGS ?=
TEST_TIMEOUT ?= 60m

.PHONY: all build run run-records clean-host test deps check generate-check lint unit bench clean

all: build

build:
	@mkdir -p bin
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/ ./cmd/...

# The main job: bitbuilderd on its embedded defaults (socket /run/bitbuilder/io.bitbuilder,
# state in /var/lib/bitbuilder). Use bbctl from another shell: ./bin/bbctl tenant list
# It changes the host (namespaces, links, networkd files in /run/systemd/network, units in
# /run/systemd/system, /etc/bitbuilder/boot-registry.json) and leaves them on Ctrl-C:
# `make clean-host` removes them, `make run-records` changes nothing on the host.
run: build
	./bin/bitbuilderd

# The daemon keeping records only (--no-host): every tenant shows HostApplied=false.
run-records: build
	./bin/bitbuilderd --no-host

# Remove from the host what `make run` made there, as deleting each tenant would; the records
# in /var/lib/bitbuilder stay (rm -rf it to forget them). The daemon must be stopped.
clean-host: build
	./bin/bitbuilderd --cleanup

# Everything CI runs: host packages and the systemd 257 test host, static checks, then
# every test (unit, root-only netlink tests, and the integration tests in the test host).
test: deps check
	$(GO) test -count=1 -timeout $(TEST_TIMEOUT) $(GOTESTFLAGS) ./...

deps:
	bash scripts/install-test-deps.sh

check: generate-check lint

generate-check:
	$(GO) generate ./api/...
	@git diff --exit-code -- api || { echo "go generate changed api/: commit the regenerated code"; exit 1; }

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	@out=$$($(GO) list -f '{{if not .Doc}}{{.ImportPath}}{{end}}' ./...); if [ -n "$$out" ]; then echo "packages without a package doc:"; echo "$$out"; exit 1; fi
	$(GO) mod tidy -diff
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...

unit:
	$(GO) test -short -count=1 ./...

# Every benchmark, then one table of each ratio against its goal (internal/benchsummary).
# BENCH_COUNT runs each benchmark that many times (min/median/max); BENCH selects them.
BENCH       ?= .
BENCH_COUNT ?= 1
bench:
	$(GO) test -run '^$$' -bench '$(BENCH)' -benchtime 2s -count $(BENCH_COUNT) ./... 2>&1 | $(GO) run ./internal/benchsummary

clean:
	rm -rf bin dist

-include packaging/install.mk
