#!/usr/bin/env bash
# `make image`: build the Jetbridge dispatcher image and smoke-test it, on a machine with no Docker engine.
#
#   1. installs buildah and debootstrap (and curl, ps) from Debian's packages if they are missing (needs root);
#   2. makes a Debian base rootfs with `debootstrap --variant=minbase` from the apt mirror this machine uses,
#      cached as a tarball in .cache/image/ (no container registry is ever contacted);
#   3. imports it as the base image (localhost/jetbridge-base:<suite>) unless that is already the same tarball;
#   4. builds image/Containerfile with `buildah bud --isolation chroot --storage-driver vfs --layers`;
#   5. runs image/smoke.sh against the result and prints the image size.
#
# Every step is skipped or served from cache when its inputs have not changed, so a second run is fast.
# Environment (not JETBRIDGE_*: those are the dispatcher's settings): IMAGE_NAME (default localhost/jetbridge:latest),
# IMAGE_NO_CACHE=1 (rebuild every layer, e.g. to pick up Debian security updates), IMAGE_SKIP_SMOKE=1,
# DEBIAN_SUITE (default: this host's Debian release, else bookworm), DEBIAN_MIRROR, DEBIAN_SECURITY_MIRROR
# (default: from /etc/apt/sources.list*).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
IMAGE=${IMAGE_NAME:-localhost/jetbridge:latest}
CACHE=$REPO/.cache/image
BUILDAH=(buildah --storage-driver vfs)
RECIPE=1 # bump when the rootfs recipe below changes, to make a new tarball

log() { printf '\033[1m== image: %s\033[0m\n' "$*" >&2; }
die() { printf 'image: error: %s\n' "$*" >&2; exit 1; }
START=$SECONDS

[ "$(id -u)" = 0 ] || die "run as root (debootstrap and buildah's vfs storage need it); e.g. sudo make image"
mkdir -p "$CACHE" /run/lock
exec 9>/run/lock/jetbridge-image.lock
flock 9 # one build at a time on this machine: they share buildah's storage, and each prunes it

# 1. tools ---------------------------------------------------------------------------------------------------------
need=()
command -v buildah >/dev/null || need+=(buildah)
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v curl >/dev/null || need+=(curl)
command -v ps >/dev/null || need+=(procps)
[ -e /usr/share/keyrings/debian-archive-keyring.gpg ] || need+=(debian-archive-keyring)
if [ ${#need[@]} -gt 0 ]; then
  command -v apt-get >/dev/null || die "missing ${need[*]} and no apt-get to install them with"
  log "installing ${need[*]}"
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}"
fi
log "$(buildah --version); $(debootstrap --version)"

# 2. the Debian rootfs ---------------------------------------------------------------------------------------------
if [ -z "${DEBIAN_SUITE:-}" ]; then
  DEBIAN_SUITE=$(. /etc/os-release 2>/dev/null && [ "${ID:-}" = debian ] && echo "${VERSION_CODENAME:-}" || true)
  DEBIAN_SUITE=${DEBIAN_SUITE:-bookworm}
fi
ARCH=$(dpkg --print-architecture)

# The first enabled `deb` source in apt's configuration (one-line .list or deb822 .sources) that serves SUITE.
apt_source() {
  python3 - "$1" /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources <<'PY'
import re, sys
want, files = sys.argv[1], sys.argv[2:]
for path in files:
    try:
        text = open(path).read()
    except OSError:
        continue
    if path.endswith(".sources"):
        for para in re.split(r"\n\s*\n", text):
            f = {}
            for line in para.splitlines():
                if line.strip().startswith("#") or ":" not in line or line[:1].isspace():
                    continue
                k, v = line.split(":", 1)
                f[k.strip().lower()] = v.split()
            if ("deb" in f.get("types", []) and want in f.get("suites", []) and f.get("uris")
                    and f.get("enabled", ["yes"])[0].lower() != "no"):
                print(f["uris"][0].rstrip("/")); sys.exit()
    else:
        for line in text.splitlines():
            m = re.match(r"\s*deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)", line)
            if m and m.group(2) == want:
                print(m.group(1).rstrip("/")); sys.exit()
PY
}
MIRROR=${DEBIAN_MIRROR:-$(apt_source "$DEBIAN_SUITE")}
[ -n "$MIRROR" ] || { echo "image: no Debian mirror for $DEBIAN_SUITE in /etc/apt/sources.list(.d); set DEBIAN_MIRROR" >&2; exit 1; }
SECURITY_MIRROR=${DEBIAN_SECURITY_MIRROR:-$(apt_source "$DEBIAN_SUITE-security")}

KEY=$(printf '%s\n' "$RECIPE" "$DEBIAN_SUITE" "$ARCH" "$MIRROR" "$SECURITY_MIRROR" | sha256sum | cut -c1-12)
TARBALL=$CACHE/debian-$DEBIAN_SUITE-$ARCH-minbase-$KEY.tar.gz
mkdir -p "$CACHE/debs"
if [ -s "$TARBALL" ] && [ -s "$TARBALL.sha256" ]; then
  log "rootfs: cached $(basename "$TARBALL")"
else
  log "rootfs: debootstrap --variant=minbase $DEBIAN_SUITE ($ARCH) from $MIRROR"
  ROOTFS=$CACHE/rootfs.tmp
  rm -rf "$ROOTFS" "$TARBALL" "$TARBALL.sha256"
  if ! debootstrap --variant=minbase --arch="$ARCH" --cache-dir="$CACHE/debs" \
      --keyring=/usr/share/keyrings/debian-archive-keyring.gpg \
      "$DEBIAN_SUITE" "$ROOTFS" "$MIRROR" >"$CACHE/debootstrap.log" 2>&1; then
    tail -n 30 "$CACHE/debootstrap.log" >&2
    die "debootstrap failed (full log: $CACHE/debootstrap.log)"
  fi
  # The image's apt sources: the same mirrors as this host, with updates and security.
  rm -f "$ROOTFS/etc/apt/sources.list"
  {
    printf 'Types: deb\nURIs: %s\nSuites: %s %s-updates\nComponents: main\nSigned-By: %s\n' \
      "$MIRROR" "$DEBIAN_SUITE" "$DEBIAN_SUITE" /usr/share/keyrings/debian-archive-keyring.gpg
    if [ -n "$SECURITY_MIRROR" ]; then
      printf '\nTypes: deb\nURIs: %s\nSuites: %s-security\nComponents: main\nSigned-By: %s\n' \
        "$SECURITY_MIRROR" "$DEBIAN_SUITE" /usr/share/keyrings/debian-archive-keyring.gpg
    fi
  } >"$ROOTFS/etc/apt/sources.list.d/debian.sources"
  # Slim it the way debian:*-slim is: no docs (but copyrights), man pages, translations, apt lists or caches.
  find "$ROOTFS/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
  find "$ROOTFS/usr/share/doc" -mindepth 1 -type d -empty -delete
  rm -rf "$ROOTFS"/usr/share/{man,info,locale,lintian}/* "$ROOTFS"/var/lib/apt/lists/* \
    "$ROOTFS"/var/cache/apt/* "$ROOTFS"/var/cache/debconf/*-old "$ROOTFS"/var/log/* "$ROOTFS"/tmp/*
  rm -f "$ROOTFS/etc/resolv.conf" "$ROOTFS/etc/hostname"
  tar --numeric-owner --xattrs -C "$ROOTFS" --exclude='./dev/*' --exclude='./proc/*' --exclude='./sys/*' \
    -czf "$TARBALL.tmp" .
  sha256sum <"$TARBALL.tmp" | cut -c1-64 >"$TARBALL.sha256.tmp"
  mv "$TARBALL.tmp" "$TARBALL" && mv "$TARBALL.sha256.tmp" "$TARBALL.sha256"
  rm -rf "$ROOTFS"
  # Older tarballs (another recipe, suite or mirror) are not needed any more.
  find "$CACHE" -maxdepth 1 -name 'debian-*.tar.gz*' -not -name "$(basename "$TARBALL")*" -delete
  log "rootfs: $(du -h "$TARBALL" | cut -f1) compressed"
fi
ROOTFS_SHA=$(cat "$TARBALL.sha256")

# 3. the base image ------------------------------------------------------------------------------------------------
BASE=localhost/jetbridge-base:$DEBIAN_SUITE
have=$("${BUILDAH[@]}" inspect --type image --format '{{index .OCIv1.Config.Labels "org.jetbridge.rootfs-sha256"}}' \
  "$BASE" 2>/dev/null || true)
if [ "$have" = "$ROOTFS_SHA" ]; then
  log "base: $BASE is up to date"
else
  log "base: importing the rootfs as $BASE"
  ctr=$("${BUILDAH[@]}" from scratch)
  trap '"${BUILDAH[@]}" rm "$ctr" >/dev/null 2>&1 || true' EXIT
  "${BUILDAH[@]}" add --quiet "$ctr" "$TARBALL" /
  "${BUILDAH[@]}" config --os linux --arch "$ARCH" \
    --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --cmd /bin/bash \
    --label org.jetbridge.rootfs-sha256="$ROOTFS_SHA" \
    --label org.opencontainers.image.description="Debian $DEBIAN_SUITE minbase (debootstrap) for Jetbridge" "$ctr"
  "${BUILDAH[@]}" commit --quiet --rm "$ctr" "$BASE" >/dev/null
  trap - EXIT
fi

# 4. the image -----------------------------------------------------------------------------------------------------
# pip in the build stage trusts the CA bundle this host's pip trusts (a TLS-inspecting proxy's CA included); it is
# passed as a build secret, so it is in no layer.
PIP_CA=""
secret=()
for f in "${PIP_CERT:-}" "${REQUESTS_CA_BUNDLE:-}" "${SSL_CERT_FILE:-}" /etc/ssl/certs/ca-certificates.crt; do
  if [ -n "$f" ] && [ -s "$f" ]; then PIP_CA=$f; secret=(--secret "id=pip-ca,src=$f"); break; fi
done
log "build: $IMAGE from image/Containerfile${PIP_CA:+ (pip CA bundle: $PIP_CA)}"
BUILD_START=$SECONDS
# What the image is made of: the Containerfile, its ignore file, the base image and every file of the build context
# (the `!` paths of the ignore file). An image already built from exactly these is not rebuilt: with vfs, even a
# fully cached build takes a minute (each step copies the whole filesystem).
base_id=$("${BUILDAH[@]}" inspect --type image --format '{{.FromImageID}}' "$BASE")
INPUTS=$({
  echo "$base_id"
  sha256sum image/Containerfile image/Containerfile.dockerignore
  sed -n 's/^!//p' image/Containerfile.dockerignore | while read -r path; do
    find "$path" -type f -not -path '*/__pycache__/*' -not -path '*.egg-info/*' -not -name '*.pyc' 2>/dev/null
  done | LC_ALL=C sort | xargs -r sha256sum
} | sha256sum | cut -c1-64)
built=$("${BUILDAH[@]}" inspect --type image --format '{{index .OCIv1.Config.Labels "org.jetbridge.build-inputs"}}' \
  "$IMAGE" 2>/dev/null || true)
if [ "${IMAGE_NO_CACHE:-}" = 1 ]; then
  # Forget the image and every cached layer on top of the base (to pick up Debian and PyPI updates).
  "${BUILDAH[@]}" rmi "$IMAGE" "${IMAGE%:*}-build:latest" >/dev/null 2>&1 || true
  "${BUILDAH[@]}" rmi --prune >/dev/null 2>&1 || true
  built=""
fi

build_image() {
  local bud=("${BUILDAH[@]}" bud --isolation chroot --layers --force-rm --pull=never --format docker
    --ignorefile image/Containerfile.dockerignore -f image/Containerfile "${secret[@]}" --build-arg "BASE_IMAGE=$BASE")
  # The build stage is tagged too, so that pruning below keeps its cached layers (the wheels) for the next run.
  "${bud[@]}" --target build -t "${IMAGE%:*}-build:latest" .
  "${bud[@]}" --label "org.jetbridge.build-inputs=$INPUTS" -t "$IMAGE" --iidfile "$CACHE/image.id" .
  local id
  id=$(cat "$CACHE/image.id")
  id=${id#sha256:}
  log "build: done in $((SECONDS - BUILD_START))s, image ${id:0:12}"
  # Images (and cached layers) that no tag leads to any more: those this build replaced. vfs stores every layer as a
  # full copy, so they are removed rather than left to fill the disk.
  local pruned
  pruned=$("${BUILDAH[@]}" rmi --prune 2>/dev/null | wc -l || true)
  [ "$pruned" = 0 ] || log "build: pruned $pruned unused image(s) and layers"
}
if [ "$built" = "$INPUTS" ]; then
  log "build: $IMAGE is up to date (build inputs ${INPUTS:0:12} unchanged)"
else
  build_image
fi

# 5. smoke test and size -------------------------------------------------------------------------------------------
if [ "${IMAGE_SKIP_SMOKE:-}" != 1 ]; then
  bash image/smoke.sh "$IMAGE"
fi
size=$("${BUILDAH[@]}" images --format '{{.Size}}' "$IMAGE" | head -n 1)
"${BUILDAH[@]}" images --filter reference="$IMAGE" --filter reference="$BASE"
log "$IMAGE: $size uncompressed (base $("${BUILDAH[@]}" images --format '{{.Size}}' "$BASE" | head -n 1)); make image took $((SECONDS - START))s"
