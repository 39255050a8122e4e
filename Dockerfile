# syntax=docker/dockerfile:1
#
# enrollq container image: a static Go binary on distroless.
#
#   docker build -t enrollq .
#   docker run --rm -e REDIS_URL=redis://host:6379/0 -e VERISOUL_API_KEY_FILE=/run/secrets/key \
#     -v "$PWD/secrets/verisoul_api_key:/run/secrets/key:ro" -p 127.0.0.1:8080:8080 enrollq
#
# docker-compose.yml next to this file builds and runs it together with Redis.

# ---------------------------------------------------------------------------
# Build stage. Runs on the build host's platform and cross-compiles for the
# target one (buildx --platform linux/amd64,linux/arm64 works; CGO is off, so
# no cross C toolchain is needed).
# ---------------------------------------------------------------------------
FROM --platform=$BUILDPLATFORM golang:1.26-bookworm AS build
WORKDIR /src

# Dependencies in their own layer: it is rebuilt only when go.mod or go.sum
# change, not on every source edit.
COPY go.mod go.sum ./
RUN go mod download && go mod verify

COPY . .
ARG TARGETOS TARGETARCH
# VERSION is what `enrollq --version` and the API calls' User-Agent name
# (docker build --build-arg VERSION=v1.2.3 .). The context holds no .git, so
# the toolchain cannot find it by itself: without the argument it is
# "(devel)".
ARG VERSION=(devel)
# The cache mount keeps Go's build cache between builds (BuildKit, the default
# builder since Docker 23); it is not part of any layer.
RUN --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH \
    go build -trimpath -ldflags="-s -w -X github.com/enrollq/enrollq/verisoul.Version=${VERSION}" -o /enrollq ./cmd/enrollq

# ---------------------------------------------------------------------------
# Runtime stage: no shell, no package manager; CA certificates (for the HTTPS
# calls to Verisoul) and tzdata are included. Runs as uid/gid 65532.
# ---------------------------------------------------------------------------
FROM gcr.io/distroless/static-debian12:nonroot

# On PATH, so that `docker compose exec worker enrollq enqueue …` works.
COPY --from=build /enrollq /usr/local/bin/enrollq

# Inside a container the HTTP endpoints (/healthz, /readyz) must listen on all
# interfaces to be reachable through a published port; enrollq's own default
# is 127.0.0.1:8080. Publish the port on the host's loopback only
# (-p 127.0.0.1:8080:8080) unless something in front of it needs more.
# Logs go to stderr as JSON (slog), one object a line.
ENV ENROLLQ_HTTP_ADDR=0.0.0.0:8080 \
    LOG_FORMAT=json
EXPOSE 8080

USER nonroot:nonroot

# enrollq handles SIGTERM (and SIGINT) itself: it stops taking tasks, lets
# in-flight ones finish for up to ENROLLQ_SHUTDOWN_TIMEOUT (default 25s), hands
# the rest back to the queue and exits. Docker's default stop timeout is 10s,
# shorter than that, so give the container more time before SIGKILL:
# `docker stop -t 30`, `docker run --stop-timeout 30`, or in compose
# `stop_grace_period: 30s` (docker-compose.yml does).
STOPSIGNAL SIGTERM

# distroless has no shell, curl or wget: the binary is its own probe.
# `enrollq healthcheck` asks the worker's GET /readyz on ENROLLQ_HTTP_ADDR
# (Redis answers, the API accepts the key, no breaker open) and exits 0, or
# 1 with the reason, which `docker inspect` shows under State.Health. For
# other commands than `worker` (the dashboard) override or disable it
# (compose: `healthcheck: {disable: true}`).
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["/usr/local/bin/enrollq", "healthcheck"]

ENTRYPOINT ["/usr/local/bin/enrollq"]
CMD ["worker"]
