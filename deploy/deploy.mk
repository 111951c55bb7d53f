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
# Platforms of the image, and where the build writes it (relative to the root).
PLATFORMS ?= linux/amd64,linux/arm64
DIST      ?= dist
# The commit's time, so that the same commit builds the same image digest.
SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null || echo 0)

.PHONY: image image-push image-docker manifests release-manifests alerts deploy-test deploy-promtool deploy-lint

## image: build the container image without Docker (static binary on a minimal base, no shell) as an OCI
##        layout in dist/image, with a CycloneDX SBOM in dist/agentrelay.cdx.json (see docs/releasing.md)
image:
	cd deploy && SOURCE_DATE_EPOCH=$(SOURCE_DATE_EPOCH) $(GO) run ./cmd/build-image \
		-version $(VERSION) -revision $(REVISION) -platforms $(PLATFORMS) \
		-out ../$(DIST)/image -sbom ../$(DIST)/agentrelay.cdx.json -digest-file ../$(DIST)/image.digest

## image-push: build the image and push it to $(IMAGE):$(IMAGE_TAG) with the credentials of ~/.docker/config.json
image-push:
	cd deploy && SOURCE_DATE_EPOCH=$(SOURCE_DATE_EPOCH) $(GO) run ./cmd/build-image \
		-version $(VERSION) -revision $(REVISION) -platforms $(PLATFORMS) \
		-out ../$(DIST)/image -sbom ../$(DIST)/agentrelay.cdx.json -digest-file ../$(DIST)/image.digest \
		-push $(IMAGE):$(IMAGE_TAG)

## image-docker: the same image with a Docker engine, from deploy/docker/Dockerfile (not the supported build)
image-docker:
	$(DOCKER) build -f deploy/docker/Dockerfile \
		--build-arg VERSION=$(VERSION) --build-arg REVISION=$(REVISION) \
		-t $(IMAGE):$(IMAGE_TAG) .

## manifests: print the Kubernetes manifests of OVERLAY (make -s manifests | kubectl apply -f -)
manifests:
	@cd deploy && $(GO) run ./cmd/render-manifests $(OVERLAY)

## release-manifests: OVERLAY's manifests with the image pinned to $(IMAGE):$(IMAGE_TAG)@<the digest make image-push
##        wrote to dist/image.digest> (docs/releasing.md)
release-manifests:
	@cd deploy && $(GO) run ./cmd/render-manifests -image $(IMAGE) -tag $(IMAGE_TAG) \
		-digest $$(cat ../$(DIST)/image.digest) $(OVERLAY)

## alerts: regenerate the PrometheusRule and AlertmanagerConfig from deploy/prometheus and deploy/alertmanager
alerts:
	cd deploy && $(GO) run ./cmd/gen-alerts

## deploy-test: check every file under deploy/ against the binary
deploy-test:
	@mkdir -p $(TEST_BIN)/deploy
	cd deploy && $(GO) test -count=1 -timeout 10m -o $(TEST_BIN)/deploy/ ./...

## deploy-promtool: promtool check rules and promtool test rules on the alert pack, with the promtool
##        deploy/go.mod pins (`go tool`; its first build compiles Prometheus: minutes, see docs/releasing.md)
deploy-promtool:
	cd deploy && $(GO) tool promtool check rules prometheus/agentrelay.rules.yaml
	cd deploy && $(GO) tool promtool test rules prometheus/agentrelay.rules.test.yaml

## deploy-lint: go vet, gofmt and go mod tidy in the deploy module
deploy-lint:
	cd deploy && $(GO) vet ./...
	@out=$$(cd deploy && gofmt -l .); if [ -n "$$out" ]; then echo "gofmt needed in deploy/:"; echo "$$out"; exit 1; fi
	cd deploy && $(GO) mod tidy -diff
