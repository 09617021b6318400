# Remora — the two commands a new user runs are `make demo` and `make test`.

GO        ?= go
TOOLS_DIR ?= $(HOME)/.cache/remora/tools
export TOOLS_DIR
# VERSION is what `remora version` and remora_build_info report (the commit
# comes from the build's VCS stamp); docker builds pass it as --build-arg.
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)

.PHONY: all build demo test vet race unit fuzz bench tools clean

all: build

build:
	$(GO) build -buildvcs=auto -ldflags "-X main.version=$(VERSION)" -o bin/remora ./cmd/remora

## demo: run Remora on an embedded registry with three demo backends.
demo:
	$(GO) run ./cmd/remora demo

## test: install what the tests need, vet, run every test with -race, then
## every fuzz target briefly (make fuzz runs them longer).
test: tools vet
	$(GO) test -race -count=1 -timeout 25m ./...
	$(GO) test -count=1 -run 'StackStaysSmall' ./pkg/upstream # a race build's stacks are larger
	FUZZTIME=300x GO=$(GO) bash scripts/fuzz.sh

## fuzz: every fuzz target for FUZZTIME (default 30s) each; the slow ones
## (whole exchanges through two proxies) for FUZZTIME_SLOW (default 30x).
fuzz:
	GO=$(GO) bash scripts/fuzz.sh

## vet: gofmt, go vet and staticcheck (installed into $(TOOLS_DIR) on first use).
vet:
	@unformatted=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$unformatted" ]; then echo "gofmt needed:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet ./...
	@sc=$$(GO=$(GO) bash scripts/staticcheck.sh) && $$sc ./...

## tools: registry servers the tests run against (built into $(TOOLS_DIR)).
tools:
	@bin=$$(bash scripts/consul-agent.sh) && echo "consul agent: $$bin"
	@bin=$$(bash scripts/polaris-server.sh) && echo "polaris server (Nacos API): $$bin"
	@bin=$$(bash scripts/kube-apiserver.sh) && echo "kube-apiserver: $$bin"
	@bin=$$(bash scripts/dnsmasq.sh) && echo "dnsmasq: $$bin"
	@bin=$$(bash scripts/helm.sh) && echo "helm: $$bin"
	@bin=$$(bash scripts/chromium.sh) && echo "chromium: $$bin"

## bench: whole-process benchmark against HAProxy and nginx (bench/README.md);
## installs haproxy, nginx and wrk from Debian packages if missing. Not part of `make test`.
## BENCH_DURATION=10s BENCH_ROUNDS=3 BENCH_WARMUP=2s BENCH_PROXIES=... BENCH_SCENARIOS=...
bench:
	GO=$(GO) bash bench/run.sh

clean:
	rm -rf bin
