# Images for tokenkeeper's binaries. The final stages are FROM scratch: static binaries, a
# non-root UID, nothing else, so they run with a read-only root filesystem.
#
#   docker build --target manager -t tokenkeeper/manager:dev .     (builds from source)
#   docker build --target sidecar -t tokenkeeper/sidecar:dev .
#
# Offline (no registry to pull golang from), build the binaries on the host with
# `make build` and use the prebuilt targets, which pull nothing:
#   docker build -f Dockerfile.prebuilt --target manager -t tokenkeeper/manager:dev .
ARG GO_IMAGE=golang:1.26
FROM ${GO_IMAGE} AS builder
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY api/ api/
COPY cmd/ cmd/
COPY controllers/ controllers/
COPY internal/ internal/
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/ ./cmd/...

FROM scratch AS manager
COPY --from=builder /out/manager /manager
USER 65532:65532
ENTRYPOINT ["/manager"]

FROM scratch AS sidecar
COPY --from=builder /out/sidecar /sidecar
USER 65532:65532
ENTRYPOINT ["/sidecar"]
