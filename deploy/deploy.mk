# Targets for deploy/: the container image, the Kubernetes manifests and the
# tests that check them. Included by the root Makefile, which defines GO,
# VERSION and REVISION. The deploy tests live in their own Go module
# (deploy/go.mod) so that Kubernetes, kustomize and Prometheus stay out of
# the worker's dependencies.

DOCKER    ?= docker
IMAGE     ?= agentrelay
IMAGE_TAG ?= $(VERSION)
# A kustomize directory, relative to deploy/.
OVERLAY   ?= kubernetes/overlays/example

.PHONY: image manifests deploy-test deploy-lint

## image: build the container image $(IMAGE):$(IMAGE_TAG), version and revision stamped (needs a Docker engine)
image:
	$(DOCKER) build -f deploy/docker/Dockerfile \
		--build-arg VERSION=$(VERSION) --build-arg REVISION=$(REVISION) \
		-t $(IMAGE):$(IMAGE_TAG) .

## manifests: print the Kubernetes manifests of OVERLAY (make -s manifests | kubectl apply -f -)
manifests:
	@cd deploy && $(GO) run ./cmd/render-manifests $(OVERLAY)

## deploy-test: check every file under deploy/ against the binary
deploy-test:
	cd deploy && $(GO) test -count=1 -timeout 10m ./...

## deploy-lint: go vet, gofmt and go mod tidy in the deploy module
deploy-lint:
	cd deploy && $(GO) vet ./...
	@out=$$(cd deploy && gofmt -l .); if [ -n "$$out" ]; then echo "gofmt needed in deploy/:"; echo "$$out"; exit 1; fi
	cd deploy && $(GO) mod tidy -diff
