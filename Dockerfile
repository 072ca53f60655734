# The agent supervisor's image: the daemon built with cgo (the deadline
# thread is C, internal/reap/alarm.c) on the Go release go.mod names, run on
# Debian slim of the same release as the build image, so the binary's glibc
# is the one it was linked against.
#
#   docker build -t agent-supervisor .
#
# Its entrypoint is the supervisor; the default command is `run` (the daemon:
# hostPID and host network, docs/deployment.md "Running in Docker" and "Running on
# Kubernetes"). As a container's init: `supervisor init -- CMD`, or copy the
# binary into an agent image:
#   COPY --from=agent-supervisor /usr/bin/supervisor /usr/bin/supervisor
#   ENTRYPOINT ["/usr/bin/supervisor", "init", "--"]
#
# Without a registry, scripts/image builds the same layout FROM scratch
# around the static binary (deploy/image/Containerfile).

FROM golang:1.26.8-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY cmd ./cmd
COPY internal ./internal
# The C deadline thread needs cgo; without it the build falls back to a Go
# thread whose lateness under load is tens of milliseconds (docs/testing.md
# "Measurements").
ENV CGO_ENABLED=1
# The version `supervisor version` prints: the build context has no .git,
# so pass them (docker build --build-arg VERSION=$(git describe --tags
# --always --dirty) --build-arg COMMIT=$(git rev-parse HEAD) .), as
# scripts/lib/build.sh stamps its builds.
ARG VERSION=dev
ARG COMMIT=unknown
RUN go build -ldflags "-X main.version=${VERSION} -X main.commit=${COMMIT}" -o /out/supervisor ./cmd/supervisor

FROM debian:bookworm-slim
# ca-certificates: PostgreSQL over TLS (sslmode=verify-full). Nothing else:
# the daemon reads /proc and the cgroup files itself, and --on-kill hooks get
# the image's /bin/sh.
RUN apt-get update \
	&& apt-get install -y --no-install-recommends ca-certificates \
	&& rm -rf /var/lib/apt/lists/*
COPY --from=build /out/supervisor /usr/bin/supervisor
ENTRYPOINT ["/usr/bin/supervisor"]
CMD ["run"]
