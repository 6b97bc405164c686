# podkit: the containers of the multi-container pod patterns.
# `make demo` runs the example pod on this machine; `make test` passes the tests.

BINARIES      := $(notdir $(wildcard cmd/*))
VERSION       ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
GO            ?= go
GOFLAGS_BUILD := -trimpath -ldflags "-s -w -X main.version=$(VERSION)"
STATICCHECK   := honnef.co/go/tools/cmd/staticcheck@v0.8.2
FUZZTIME      ?= 10s
IMAGE_PREFIX  ?= podkit
IMAGE_TAG     ?= dev

.PHONY: all build test lint unit fuzz bench demo images kind-demo clean

all: build

## build: static binaries for every cmd/* into bin/
build:
	@mkdir -p bin
	CGO_ENABLED=0 $(GO) build $(GOFLAGS_BUILD) -o bin/ ./cmd/...

## test: formatting, vet, staticcheck and every test (integration and end-to-end included) under the race detector
test: lint unit

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...

unit:
	$(GO) test -race -timeout 20m ./...

## fuzz: a short run of every FuzzXxx target (FUZZTIME each)
fuzz:
	@set -e; for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
	    echo "== $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg; \
	  done; done

## bench: side-by-side comparisons with the tools podkit replaces, printed as tables
bench: build
	@for b in $(notdir $(wildcard bench/*)); do \
	  [ -f bench/$$b/main.go ] || continue; \
	  echo; echo "=== $$b"; $(GO) run ./bench/$$b -bin ./bin || exit 1; done

## demo: the example pod on this machine (needs root for namespaces); Ctrl-C stops it
demo: build
	$(GO) run ./examples/demo -bin ./bin

## images: one image per binary (needs a Docker engine)
images:
	@for b in $(BINARIES); do \
	  echo "docker build --target $$b -t $(IMAGE_PREFIX)/$$b:$(IMAGE_TAG) ."; \
	  docker build --build-arg VERSION=$(VERSION) --target $$b -t $(IMAGE_PREFIX)/$$b:$(IMAGE_TAG) . || exit 1; done

## kind-demo: build the images, load them into a kind cluster and apply examples/k8s
kind-demo:
	IMAGE_PREFIX=$(IMAGE_PREFIX) IMAGE_TAG=$(IMAGE_TAG) ./examples/kind/demo.sh

clean:
	rm -rf bin
