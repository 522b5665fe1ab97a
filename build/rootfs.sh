#!/bin/sh
# Builds the container image's root filesystem into OUTDIR: the static
# binary, the CA certificates, passwd and group files naming the non-root
# user (65532, "nonroot"), and the /data and /tmp mount points (the
# Dockerfile gives those two to the user).
#
# The Dockerfile's compile stage runs it, and so does CI on the host when
# no image registry is reachable (the result then replaces the rootfs
# stage: --build-context rootfs=OUTDIR): one script, so that both images
# hold a binary built the same way.
#
#   sh build/rootfs.sh OUTDIR [VERSION]
set -eu
out=${1:?usage: build/rootfs.sh OUTDIR [VERSION]}
version=${2:-dev}
cd "$(dirname "$0")/.."

rm -rf "$out"
mkdir -p "$out/etc/ssl/certs" "$out/data" "$out/tmp"
# Static (no cgo: modernc.org/sqlite is pure Go), reproducible paths,
# no debug symbols; the build info (module versions) stays readable by
# "go version -m". No VCS stamp: the Docker build context has no .git, so
# the version comes from VERSION alone, wherever the binary is built.
CGO_ENABLED=0 go build -trimpath -buildvcs=false -ldflags "-s -w -X main.version=$version" -o "$out/crm-mcp" ./cmd/crm-mcp
cp /etc/ssl/certs/ca-certificates.crt "$out/etc/ssl/certs/ca-certificates.crt"
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/data:/sbin/nologin\n' >"$out/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' >"$out/etc/group"
chmod 0755 "$out/crm-mcp" "$out/data" "$out/tmp"
chmod 0644 "$out/etc/passwd" "$out/etc/group" "$out/etc/ssl/certs/ca-certificates.crt"
