# tokenkeeper developer entry points. Everything builds from source through the Go module
# proxy (see hack/kube-binaries.sh), so these targets work on an offline machine.
SHELL := /usr/bin/env bash -o pipefail
.SHELLFLAGS := -ec

GO ?= go
CONTROLLER_GEN := $(GO) tool controller-gen
IMG_MANAGER ?= tokenkeeper/manager:dev
IMG_SIDECAR ?= tokenkeeper/sidecar:dev

.PHONY: all
all: build

##@ Development

.PHONY: generate
generate: ## Generate deepcopy code, CRDs and RBAC from markers.
	$(CONTROLLER_GEN) object paths=./api/...
	$(CONTROLLER_GEN) crd paths=./api/... output:crd:artifacts:config=config/crd/bases
	$(CONTROLLER_GEN) rbac:roleName=manager-role paths=./controllers/... paths=./internal/... output:rbac:artifacts:config=config/rbac

.PHONY: fmt
fmt: ## gofmt the tree.
	gofmt -l -w $$(git ls-files '*.go')

.PHONY: vet
vet: ## go vet, and check gofmt.
	$(GO) vet ./...
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed: $$out"; exit 1; fi

# git diff ignores untracked files: a newly generated CRD or RBAC file must be committed too.
.PHONY: verify-generated
verify-generated: generate ## Fail when generated files are not committed.
	@git diff --exit-code -- api config || { echo "generated files are stale: run make generate and commit"; exit 1; }
	@new=$$(git status --porcelain --untracked-files=all -- api config); if [ -n "$$new" ]; then echo "$$new"; echo "generated files are not committed: run make generate and commit"; exit 1; fi

.PHONY: verify-manifests
verify-manifests: envtest-assets ## Render the kustomize trees users apply.
	@k=$$(hack/kube-binaries.sh)/kubectl; for d in config/default config/samples; do $$k kustomize $$d >/dev/null || exit 1; done; echo "manifests render"

FUZZTIME ?= 30s
.PHONY: fuzz
fuzz: ## Run each fuzz test for FUZZTIME.
	$(GO) test -run='^$$' -fuzz='^FuzzLoadRing$$' -fuzztime=$(FUZZTIME) -fuzzminimizetime=200x ./internal/keys
	$(GO) test -run='^$$' -fuzz='^FuzzParse$$' -fuzztime=$(FUZZTIME) -fuzzminimizetime=200x ./internal/jwks
	$(GO) test -run='^$$' -fuzz='^FuzzVerify$$' -fuzztime=$(FUZZTIME) -fuzzminimizetime=200x ./internal/verify
	$(GO) test -run='^$$' -fuzz='^FuzzQueryKey$$' -fuzztime=$(FUZZTIME) -fuzzminimizetime=200x ./internal/verify
	$(GO) test -run='^$$' -fuzz='^FuzzUsableRemoteKeys$$' -fuzztime=$(FUZZTIME) -fuzzminimizetime=200x ./internal/sidecar

.PHONY: envtest-assets
envtest-assets: ## Build kube-apiserver, etcd and kubectl from source into bin/k8s (cached).
	hack/kube-binaries.sh >/dev/null

.PHONY: test
test: vet envtest-assets ## Unit and integration tests (envtest on a source-built API server).
	KUBEBUILDER_ASSETS=$$(hack/kube-binaries.sh) $(GO) test -race -count=1 ./...

.PHONY: test-unit
test-unit: ## Unit tests only (no API server).
	$(GO) test -count=1 ./internal/... ./api/...

##@ Build

.PHONY: build
build: ## Build the binaries into bin/.
	CGO_ENABLED=0 $(GO) build -trimpath -o bin/ ./cmd/...

.PHONY: docker-build
docker-build: build ## Build the manager and sidecar images from the host-built binaries (pulls nothing).
	docker build -f Dockerfile.prebuilt --target manager -t $(IMG_MANAGER) .
	docker build -f Dockerfile.prebuilt --target sidecar -t $(IMG_SIDECAR) .

.PHONY: run
run: envtest-assets ## Run the manager against the current kubeconfig.
	$(GO) run ./cmd/manager

##@ Kind (e2e)

.PHONY: kind-image
kind-image: ## Build the kind node image from source (cached by its inputs); KIND_NODE_IMAGE skips it.
	hack/kind/host.sh
	hack/kind/node-image.sh

.PHONY: test-e2e
test-e2e: ## Create a kind cluster, deploy config/default, run test/e2e, delete the cluster.
	hack/e2e.sh

.PHONY: demo-kind
demo-kind: ## The whole story on a kind cluster: injection, 200/401/403, a leaked key revoked.
	hack/demo-kind.sh

##@ Demo and benchmarks

.PHONY: demo
demo: envtest-assets build ## Local control plane + manager + a SigningKey rotating live.
	hack/demo.sh

.PHONY: bench-signingkeys
bench-signingkeys: envtest-assets build ## 1000 SigningKeys against a local API server.
	hack/bench-signingkeys.sh

.PHONY: bench-distribution
bench-distribution: envtest-assets build ## Push one RevocationList change to 1000 and 10000 subscribed sidecars; 100k revocations (BENCH_SUBSCRIBERS=...).
	hack/bench-distribution.sh

.PHONY: bench-proxy
bench-proxy: build ## Loopback load test: sidecar vs a plain Go proxy, oauth2-proxy and HAProxy jwt_verify (SIDECAR_BEFORE_REV=<commit> adds another sidecar build).
	hack/bench-proxy.sh

.PHONY: help
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*##"} /^[a-zA-Z_-]+:.*?##/ { printf "  %-20s %s\n", $$1, $$2 } /^##@/ { printf "\n%s\n", substr($$0, 5) }' $(MAKEFILE_LIST)
