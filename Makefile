# darkroom — build, test, benchmark, lint.
GO       ?= go
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -X github.com/darkroom-ai/darkroom/cmd.Version=$(VERSION)

.PHONY: all build test race bench lint fuzz ci kernels clean

all: build

build:
	CGO_ENABLED=0 $(GO) build -ldflags "$(LDFLAGS)" -o bin/darkroom .

test:
	$(GO) test ./...

race:
	$(GO) test -race -short ./...

# CPU benchmarks: SGEMM vs gonum, conv2d at SD sizes, end-to-end tiny model.
bench:
	$(GO) test -run '^$$' -bench . -benchtime 2x ./engine/backend/cpu/gemm/ ./engine/

lint:
	gofmt -l $$(git ls-files '*.go')
	$(GO) vet ./...
	staticcheck ./...

fuzz:
	cd engine/weights/safetensors && $(GO) test -run '^$$' -fuzz FuzzOpen -fuzztime 10m

ci:
	bash .ci/run

clean:
	rm -rf bin
