# syntax=docker/dockerfile:1
#
# crm-mcp container image: a static binary, CA certificates and a non-root
# user on an empty base. It runs with a read-only root filesystem; state
# (the CRM database, the audit log) lives in the /data volume.
#
#   docker build -t crm-mcp --build-arg VERSION=v1.2.3 .
#
# Offline (no registry to pull golang from), build the same root
# filesystem on the host with the same script, and hand it to the build in
# place of the rootfs stage (BuildKit and buildah then skip the stages it
# replaces):
#
#   sh build/rootfs.sh build/rootfs v1.2.3
#   docker buildx build --build-context rootfs=build/rootfs \
#     --build-arg VERSION=v1.2.3 -t crm-mcp .

ARG GO_VERSION=1.26

FROM golang:${GO_VERSION}-bookworm AS compile
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN sh build/rootfs.sh /rootfs "$VERSION"

# The image's files, and nothing else: what build/rootfs.sh made.
FROM scratch AS rootfs
COPY --from=compile /rootfs/ /

FROM scratch
ARG VERSION=dev
LABEL org.opencontainers.image.title="crm-mcp" \
      org.opencontainers.image.description="CRM MCP server protected by Cisco Duo" \
      org.opencontainers.image.version="${VERSION}"
COPY --from=rootfs /etc/passwd /etc/group /etc/
COPY --from=rootfs /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=rootfs /crm-mcp /crm-mcp
# The volume's mount point belongs to the user, so that a new named
# volume starts writable for it; so does /tmp (a tmpfs when the root
# filesystem is read-only).
COPY --from=rootfs --chown=65532:65532 /data /data
COPY --from=rootfs --chown=65532:65532 /tmp /tmp
# The container's defaults: listen on every interface of its own network
# namespace (publish the port on the host's loopback, behind the TLS
# proxy), state under /data.
ENV MCP_LISTEN_ADDR=:8080 \
    CRM_DB_PATH=/data/crm.db \
    AUDIT_LOG_PATH=/data/audit.log
USER 65532:65532
WORKDIR /data
VOLUME ["/data"]
EXPOSE 8080
# Exec form: there is no shell in the image.
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
    CMD ["/crm-mcp", "healthcheck"]
ENTRYPOINT ["/crm-mcp"]
CMD ["serve"]
