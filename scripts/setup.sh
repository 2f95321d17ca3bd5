#!/usr/bin/env bash
# Prepare a Debian/Ubuntu machine to build and test this project.
#
#   scripts/setup.sh                     # install/check, then print what to export
#   eval "$(scripts/setup.sh)"           # same, and export WAL_ETCD_IMAGE in this shell
#   scripts/setup.sh --rebuild-image     # rebuild the offline etcd image even if present
#   scripts/setup.sh --protoc-only       # step 1 only (for builds that need no etcd)
#
# What it does (each step is skipped when already done, so it is safe to rerun):
#   1. protoc: etcd-client compiles etcd's protobuf definitions at build time.
#      Installs Debian's `protobuf-compiler` and `libprotobuf-dev` (protoc's
#      well-known includes) with apt-get if `protoc` is missing (through sudo
#      when not root), then proves protoc works: it compiles a file importing
#      google/protobuf/descriptor.proto with $PROTOC (or protoc on PATH) and
#      $PROTOC_INCLUDE, exactly as the build will, and fails naming the
#      package when that does not work. Also a C compiler (build-essential) if
#      `cc` is missing. Rust itself is only checked: install it with rustup.
#   2. An etcd image for the tests (DESIGN.md §8), named by $WAL_ETCD_IMAGE:
#      - unset or the official image: use it if present, else `docker pull` it
#        (bounded by $WAL_ETCD_PULL_TIMEOUT seconds, default 60); if that fails
#        (no registry), use or build the offline image wal-etcd-local:latest with
#        scripts/build-etcd-image.sh (etcd from Debian's etcd-server package);
#      - wal-etcd-local:latest: build it if missing;
#      - any other image: use it if present, else pull it, else fail.
#      Skipped when $WAL_ETCD_ENDPOINTS points the tests at an existing cluster.
#
# Progress goes to stderr. The only thing on stdout is the line
# `export WAL_ETCD_IMAGE=...`, hence the eval form above.
set -euo pipefail

OFFICIAL_IMAGE="gcr.io/etcd-development/etcd:v3.5.17"
LOCAL_IMAGE="wal-etcd-local:latest"
PULL_TIMEOUT="${WAL_ETCD_PULL_TIMEOUT:-60}"
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

rebuild=0
protoc_only=0
for arg in "$@"; do
    case "$arg" in
        --rebuild-image) rebuild=1 ;;
        --protoc-only) protoc_only=1 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) printf 'setup: unknown argument %s (try --help)\n' "$arg" >&2; exit 2 ;;
    esac
done

log()  { printf 'setup: %s\n' "$*" >&2; }
warn() { printf 'setup: WARNING: %s\n' "$*" >&2; }
die()  { printf 'setup: ERROR: %s\n' "$*" >&2; exit 1; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"
    elif command -v sudo >/dev/null 2>&1; then sudo "$@"
    else die "need root for: $* (run as root, or install sudo)"
    fi
}

# apt-get, waiting for another apt/dpkg (e.g. unattended-upgrades, a background
# `apt-get update`) to release its lock instead of failing or killing it.
apt_get() {
    local tries=0 err
    err=$(mktemp)
    while :; do
        if as_root env DEBIAN_FRONTEND=noninteractive \
            apt-get -o DPkg::Lock::Timeout=300 "$@" 2>"$err" >&2; then
            cat "$err" >&2; rm -f "$err"; return 0
        fi
        cat "$err" >&2
        if grep -qiE 'could not get lock|unable to lock' "$err" && [ $tries -lt 60 ]; then
            tries=$((tries + 1))
            log "apt is busy (another apt/dpkg holds its lock); waiting..."
            sleep 5
            continue
        fi
        rm -f "$err"; return 1
    done
}

apt_updated=0
apt_update_once() {
    [ $apt_updated -eq 1 ] && return 0
    log "running apt-get update"
    apt_get update -qq
    apt_updated=1
}

apt_install() {
    command -v apt-get >/dev/null 2>&1 || return 1
    # Fresh containers often have no package lists at all.
    local candidate
    candidate=$(apt-cache policy "$1" 2>/dev/null | awk '/Candidate:/ {print $2}')
    if [ -z "$candidate" ] || [ "$candidate" = "(none)" ]; then
        apt_update_once
    fi
    log "installing $* with apt-get"
    # Retry once after an update: stale lists give 404s.
    apt_get install -y -q --no-install-recommends "$@" \
        || { apt_update_once && apt_get install -y -q --no-install-recommends "$@"; }
}

# ---------------------------------------------------------------- 1. toolchain
# etcd-client's build script runs prost-build, which calls $PROTOC (else
# `protoc` on PATH) and adds $PROTOC_INCLUDE (if set) as an include path.
# etcd's .proto files import google/protobuf/descriptor.proto, so protoc alone
# is not enough: its well-known includes must be found too (Debian ships them
# in libprotobuf-dev, not in protobuf-compiler). The check below compiles a
# file with that import the same way the build will, whichever protoc it is.
PROTO_PACKAGES="protobuf-compiler libprotobuf-dev"

protoc_bin() {
    if [ -n "${PROTOC:-}" ]; then printf '%s\n' "$PROTOC"; else command -v protoc || true; fi
}

# Prints nothing and succeeds when protoc resolves descriptor.proto; else
# prints protoc's complaint and fails.
protoc_check() {
    local bin=$1 dir out
    dir=$(mktemp -d "${TMPDIR:-/tmp}/wal-setup-protoc.XXXXXX")
    printf 'syntax = "proto3";\nimport "google/protobuf/descriptor.proto";\nmessage Check { google.protobuf.FileDescriptorProto f = 1; }\n' \
        > "$dir/check.proto"
    if out=$("$bin" ${PROTOC_INCLUDE:+-I "$PROTOC_INCLUDE"} -I "$dir" \
            --descriptor_set_out="$dir/out.pb" "$dir/check.proto" 2>&1); then
        rm -rf "$dir"; return 0
    fi
    rm -rf "$dir"
    printf '%s\n' "$out" | head -n 3
    return 1
}

if [ -n "${PROTOC_INCLUDE:-}" ] && [ ! -d "$PROTOC_INCLUDE" ]; then
    die "PROTOC_INCLUDE=$PROTOC_INCLUDE is not a directory (it must hold google/protobuf/descriptor.proto)"
fi
if [ -n "${PROTOC:-}" ]; then
    [ -x "$PROTOC" ] || die "PROTOC=$PROTOC is not an executable file"
    log "protoc: using \$PROTOC=$PROTOC ($("$PROTOC" --version))"
elif command -v protoc >/dev/null 2>&1; then
    log "protoc: already installed ($(protoc --version) at $(command -v protoc))"
else
    apt_install $PROTO_PACKAGES || die "protoc is missing and could not be installed.
  Debian/Ubuntu: sudo apt-get install $PROTO_PACKAGES
  Fedora: sudo dnf install protobuf-compiler protobuf-devel    macOS: brew install protobuf
  or unpack a release from https://github.com/protocolbuffers/protobuf/releases
  and set PROTOC=/path/to/bin/protoc PROTOC_INCLUDE=/path/to/include"
    command -v protoc >/dev/null 2>&1 \
        || die "protobuf-compiler is installed but protoc is not on PATH; set PROTOC=/path/to/protoc"
    log "protoc: installed ($(protoc --version))"
fi

protoc=$(protoc_bin)
if ! complaint=$(protoc_check "$protoc"); then
    # A protoc without its includes: on Debian/Ubuntu they are one package
    # away, when the protoc is the system's own and no override is in play.
    if [ -z "${PROTOC:-}" ] && [ -z "${PROTOC_INCLUDE:-}" ] && [ "$protoc" = /usr/bin/protoc ] \
        && command -v apt-get >/dev/null 2>&1; then
        log "protoc cannot find google/protobuf/descriptor.proto: installing libprotobuf-dev"
        apt_install libprotobuf-dev || true
        complaint=$(protoc_check "$protoc") && complaint=""
    fi
    if [ -n "$complaint" ]; then
        printf '%s\n' "$complaint" | sed 's/^/setup:   protoc: /' >&2
        die "$protoc cannot import google/protobuf/descriptor.proto: install libprotobuf-dev (Debian/Ubuntu; protobuf-devel on Fedora), or set PROTOC_INCLUDE to the directory that holds google/protobuf/"
    fi
fi
log "protoc: imports google/protobuf/descriptor.proto (checked by compiling a test file)"

if command -v cc >/dev/null 2>&1; then
    log "C compiler: present ($(command -v cc))"
else
    apt_install build-essential || die "no C compiler (cc); install build-essential or your platform's equivalent"
    log "C compiler: installed build-essential"
fi

if command -v cargo >/dev/null 2>&1; then
    log "Rust: $(cargo --version)"
else
    warn "cargo not found: install Rust with https://rustup.rs (not done by this script)"
fi

# ---------------------------------------------------------------- 2. etcd image
image_present() { docker image inspect "$1" >/dev/null 2>&1; }

try_pull() {
    log "pulling $1 (timeout ${PULL_TIMEOUT}s)"
    if timeout "$PULL_TIMEOUT" docker pull --quiet "$1" >&2; then
        return 0
    fi
    log "could not pull $1 (no registry access?)"
    return 1
}

build_local() {
    log "building $LOCAL_IMAGE offline from Debian's etcd-server (scripts/build-etcd-image.sh)"
    "$here/build-etcd-image.sh" "$LOCAL_IMAGE" >/dev/null
}

if [ $protoc_only -eq 1 ]; then
    log "done (--protoc-only)"
    exit 0
fi

if [ -n "${WAL_ETCD_ENDPOINTS:-}" ]; then
    log "WAL_ETCD_ENDPOINTS=$WAL_ETCD_ENDPOINTS: tests use that cluster; no etcd image needed"
    if [ -n "${WAL_ETCD_IMAGE:-}" ]; then
        printf 'export WAL_ETCD_IMAGE=%s\n' "$WAL_ETCD_IMAGE"
    fi
    log "done"
    exit 0
fi

if ! command -v docker >/dev/null 2>&1 || ! docker info >/dev/null 2>&1; then
    warn "docker is not installed or its daemon is not reachable: the etcd tests need"
    warn "docker (apt-get install docker.io), or WAL_ETCD_ENDPOINTS=host:port,... of a running etcd"
    log "done (without an etcd image)"
    exit 0
fi

requested="${WAL_ETCD_IMAGE:-}"
image=""
case "$requested" in
    ""|"$OFFICIAL_IMAGE")
        if [ $rebuild -eq 1 ]; then
            build_local && image=$LOCAL_IMAGE
        elif image_present "$OFFICIAL_IMAGE"; then
            log "etcd image: $OFFICIAL_IMAGE is present"
            image=$OFFICIAL_IMAGE
        elif try_pull "$OFFICIAL_IMAGE"; then
            image=$OFFICIAL_IMAGE
        elif image_present "$LOCAL_IMAGE"; then
            log "etcd image: falling back to $LOCAL_IMAGE, already built (--rebuild-image to rebuild)"
            image=$LOCAL_IMAGE
        else
            build_local && image=$LOCAL_IMAGE
        fi
        ;;
    "$LOCAL_IMAGE")
        if [ $rebuild -eq 0 ] && image_present "$LOCAL_IMAGE"; then
            log "etcd image: $LOCAL_IMAGE is present (--rebuild-image to rebuild)"
        else
            build_local
        fi
        image=$LOCAL_IMAGE
        ;;
    *)
        if image_present "$requested"; then
            log "etcd image: $requested is present"
        else
            try_pull "$requested" || die "WAL_ETCD_IMAGE=$requested is neither present nor pullable.
  Unset it (or set it to $LOCAL_IMAGE) to use the offline build."
        fi
        image=$requested
        ;;
esac

[ -n "$image" ] || die "no etcd image available"
log "etcd image: $image ($(docker run --rm "$image" /usr/local/bin/etcd --version | awk 'NR == 1'))"
if [ "$image" != "$OFFICIAL_IMAGE" ] && [ "$image" != "$requested" ]; then
    log "the tests and docker-compose need: export WAL_ETCD_IMAGE=$image"
fi
log "done"
printf 'export WAL_ETCD_IMAGE=%s\n' "$image"
