# Sluice. 'make run' serves configs/dev.yaml; 'make test' runs every test,
# installing what the tests need first.

GO        ?= go
BIN       := bin
VERSION   := $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -X main.version=$(VERSION)
PLUGINS   := $(notdir $(wildcard plugins/*))
FUZZTIME  ?= 30s
FUZZMINIMIZETIME ?= 5s
# Build tags: 'make build TAGS=pprof' makes a sluice that serves
# net/http/pprof on the address in SLUICE_PPROF (loopback only), for profiling; the
# default build does not contain the profiler.
TAGS      ?=

.PHONY: all build run test test-deps lint fuzz bench proto clean

all: build

build:
	$(GO) build$(if $(TAGS), -tags "$(TAGS)") -ldflags "$(LDFLAGS)" -o $(BIN)/sluice ./cmd/sluice
	@for p in $(PLUGINS); do \
		if [ -f plugins/$$p/main.go ]; then \
			echo "$(GO) build -o $(BIN)/plugins/$$p ./plugins/$$p"; \
			$(GO) build -o $(BIN)/plugins/$$p ./plugins/$$p || exit 1; \
		fi; \
	done

run: build
	$(BIN)/sluice serve -c configs/dev.yaml

# The tests drive real clients (swaks, Python's smtplib) and need a few
# Debian packages; test-deps installs the missing ones.
test: test-deps build
	$(GO) vet ./...
	$(GO) test -race -timeout 30m ./...

test-deps:
	@.ci/deps.sh

# gofmt, go vet, staticcheck (installed at a pinned version when missing)
# and a go.mod that 'go mod tidy' would leave as it is.
STATICCHECK_VERSION := v0.8.2
STATICCHECK := $(shell $(GO) env GOPATH)/bin/staticcheck

lint:
	@out=$$(gofmt -l .); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	@if ! $(STATICCHECK) -version 2>/dev/null | grep -qF '($(patsubst v%,%,$(STATICCHECK_VERSION)))'; then \
		echo "$(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)"; \
		$(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION); \
	fi
	$(STATICCHECK) ./...
	$(GO) mod tidy -diff

# Every fuzz target (each func FuzzX in a _test.go file, found afresh, so a
# new one is never left out) runs for FUZZTIME. Minimizing a new input may
# take FUZZMINIMIZETIME of it: Go's default, 60s, spent the whole run of
# the slower targets. imapd's FuzzCommands runs a whole session per input,
# a few dozen a second, so it does not minimize at all.
fuzz:
	@grep -r --include='*_test.go' -o '^func Fuzz[A-Za-z0-9_]*' . | sort | while IFS=: read -r file fn; do \
		target=$${fn#func }; pkg=./$$(dirname $${file#./}); \
		case $$pkg/$$target in ./core/imapd/FuzzCommands) min=1x;; *) min=$(FUZZMINIMIZETIME);; esac; \
		echo "$(GO) test -run '^$$' -fuzz '^$$target\$$' -fuzztime $(FUZZTIME) -fuzzminimizetime $$min $$pkg"; \
		$(GO) test -run '^$$' -fuzz "^$$target\$$" -fuzztime $(FUZZTIME) -fuzzminimizetime $$min $$pkg || exit 1; \
	done

bench: build
	@.ci/deps.sh bench
	$(GO) run ./cmd/sluice-bench
	$(GO) run ./cmd/spam-eval

# Regenerates the plugin protocol's Go code after sdk/proto changes (needs
# protoc and the generators that .ci/deps.sh installs).
proto:
	protoc --plugin=protoc-gen-go=$$($(GO) env GOPATH)/bin/protoc-gen-go \
		--plugin=protoc-gen-go-grpc=$$($(GO) env GOPATH)/bin/protoc-gen-go-grpc \
		-I sdk/proto --go_out=. --go_opt=module=github.com/sluice-mail/sluice \
		--go-grpc_out=. --go-grpc_opt=module=github.com/sluice-mail/sluice \
		sdk/proto/sluice/plugin/v1/filter.proto

clean:
	rm -rf $(BIN)
