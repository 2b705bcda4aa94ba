# syntax=docker/dockerfile:1
#
# Odin authz images. Two targets:
#
#   docker build -t odin-authz .                      # target odin (the default, last stage):
#                                                    # /odin, every command (authz, admin, migrate, devissuer, ...)
#   docker build --target load -t odin-load .         # /odin-load, the load harness, plus /odin for it to measure
#
# docker-compose.yml builds both. Static binaries (CGO_ENABLED=0) on distroless:
# no shell, no package manager, CA certificates and tzdata included, user
# nonroot (65532).
#
# No HEALTHCHECK here: the image has no shell and no curl, and one image runs
# several commands that are checked on different ports (authz :9003/readyz,
# admin :9004/readyz, devissuer :9005/healthz; migrate exits). Health is probed
# with the binary itself, in exec form, by whoever runs the container:
#   compose:    healthcheck: {test: ["CMD", "/odin", "healthcheck", "--url", "http://127.0.0.1:9003/readyz"]}
#   Kubernetes: httpGet probes on the same paths (envoy/istio/*.yaml); it ignores HEALTHCHECK anyway.

ARG GO_VERSION=1.26
# The release this image is (a label), and the commit it is built from: .git
# is not in the build context, so the revision and its commit time come in as
# build arguments and are linked into the binary (`odin version` shows them).
#   docker build --build-arg VERSION=v1.2.3 \
#     --build-arg VCS_REVISION=$(git rev-parse HEAD) \
#     --build-arg VCS_TIME=$(git show -s --format=%cI HEAD) .
# scripts/release.sh passes them.
ARG VERSION=devel
ARG VCS_REVISION=
ARG VCS_TIME=

# ---- build: compile with the module and build caches kept between builds ----
FROM golang:${GO_VERSION}-bookworm AS build
WORKDIR /src
ENV CGO_ENABLED=0 GOFLAGS=-buildvcs=false
# Dependencies first, so editing the source does not download them again.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod \
    go mod download
COPY . .
# After the download, so a new revision does not invalidate its layer.
ARG VCS_REVISION
ARG VCS_TIME
ENV ODIN_LDFLAGS="-s -w -X github.com/odin-scan/odin-authz/internal/buildinfo.revision=${VCS_REVISION} -X github.com/odin-scan/odin-authz/internal/buildinfo.revisionTime=${VCS_TIME}"
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    go build -trimpath -ldflags="$ODIN_LDFLAGS" -o /out/odin ./cmd/odin

# ---- build-load: the load harness, compiled only when the load target is built ----
FROM build AS build-load
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    go build -trimpath -ldflags="$ODIN_LDFLAGS" -o /out/odin-load ./cmd/odin-load

# ---- load: odin-load and the odin binary it starts and measures ----
# (`odin-load run --odin-bin /odin` with a loopback PostgreSQL and Redis: the
# bench service of docker-compose.yml; or `odin-load run --grpc-target …`
# against a running stack: its load service.)
FROM gcr.io/distroless/static-debian12:nonroot AS load
ARG VERSION
ARG VCS_REVISION
LABEL org.opencontainers.image.version="${VERSION}" org.opencontainers.image.revision="${VCS_REVISION}"
COPY --from=build /out/odin /odin
COPY --from=build-load /out/odin-load /odin-load
USER 65532:65532
ENTRYPOINT ["/odin-load"]
CMD ["run"]

# ---- odin: the server image (default target) ----
FROM gcr.io/distroless/static-debian12:nonroot AS odin
ARG VERSION
ARG VCS_REVISION
LABEL org.opencontainers.image.title="odin-authz" org.opencontainers.image.version="${VERSION}" org.opencontainers.image.revision="${VCS_REVISION}"
COPY --from=build /out/odin /odin
USER 65532:65532
# 9001 gRPC Check (Envoy ext_authz), 9002 HTTP forward-auth, 9003 authz ops
# (/healthz /readyz /metrics), 9004 admin API, 9005 devissuer (development only).
EXPOSE 9001 9002 9003 9004 9005
ENTRYPOINT ["/odin"]
CMD ["authz"]
