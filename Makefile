# Conveyor's build. Everything here is also a plain go command; make is a
# convenience, not a requirement.
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X github.com/conveyorhq/conveyor/internal/version.Version=$(VERSION)
GOFLAGS_REPRO := -trimpath -buildvcs=false

.PHONY: build test build-arm64 build-amd64 build-lambda dist bench clean image

build:
	go build $(GOFLAGS_REPRO) -ldflags '$(LDFLAGS)' -o dist/conveyor ./cmd/conveyor

test:
	go test -count=1 ./... && go -C infra test -count=1 ./...

build-arm64:
	CGO_ENABLED=0 GOOS=linux GOARCH=arm64 go build $(GOFLAGS_REPRO) -ldflags '$(LDFLAGS)' -o dist/linux-arm64/conveyor ./cmd/conveyor

build-amd64:
	CGO_ENABLED=0 GOOS=linux GOARCH=amd64 go build $(GOFLAGS_REPRO) -ldflags '$(LDFLAGS)' -o dist/linux-amd64/conveyor ./cmd/conveyor

build-lambda:
	mkdir -p dist/lambda
	CGO_ENABLED=0 GOOS=linux GOARCH=arm64 go build $(GOFLAGS_REPRO) -tags lambda.norpc -ldflags '$(LDFLAGS)' -o dist/lambda/bootstrap ./cmd/conveyor-lambda
	cd dist/lambda && rm -f bootstrap.zip && TZ=UTC touch -t 198001010000 bootstrap && zip -X -q bootstrap.zip bootstrap

dist: build-arm64 build-amd64 build-lambda

bench:
	go run ./bench/pipeline

# The OCI image (static binary on an empty base) as an OCI layout tar, built
# without a container engine; IMAGE_ARCH=arm64 for Graviton nodes.
IMAGE_ARCH ?= $(shell go env GOARCH)
image:
	mkdir -p dist
	go run ./deploy/image -arch $(IMAGE_ARCH) -version $(VERSION) -o dist/conveyor-oci-$(IMAGE_ARCH).tar

clean:
	rm -rf dist
