# Sourced by scripts/package and scripts/image (and the tests that build
# what they ship).
#
# build_static OUT: the daemon as one static binary. cgo stays on (the
# deadline thread is C, internal/reap/alarm.c); netgo and osusergo keep
# glibc's resolver and NSS out, and the external linker links libc in
# statically. The version is `git describe` of the checkout, the commit its
# hash; outside a git checkout both say so.
build_static() {
	local out=$1 v c
	v=$(git describe --tags --always --dirty 2>/dev/null || echo unknown)
	c=$(git rev-parse HEAD 2>/dev/null || echo unknown)
	CGO_ENABLED=1 go build -trimpath -tags netgo,osusergo \
		-ldflags "-linkmode external -extldflags -static -X main.version=$v -X main.commit=$c" \
		-o "$out" ./cmd/supervisor
}
