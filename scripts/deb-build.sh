#!/usr/bin/env bash
# `make deb`: builds target/debian/sega-uploader_<version>_amd64.deb.
#
#   scripts/deb-build.sh [--deb-version V] [--output DIR] [--no-build]
#
# 1. The release binary with cargo-zigbuild against glibc 2.27 (Ubuntu 18.04), in its own
#    target dir (target/zig) so the debug builds of `make test` are left alone.
# 2. cargo-deb packs it with the assets and maintainer scripts named in Cargo.toml
#    ([package.metadata.deb]), without building again (--no-build: cargo-deb's own
#    zigbuild mode looks for the binary in the wrong place).
# 3. The package is unpacked and packed again with dpkg-deb only to add the md5sums file
#    cargo-deb does not write (`dpkg --verify` and debsums use it); members stay xz, which
#    dpkg on Ubuntu 18.04 reads (it cannot read zstd).
# Prints the path of the .deb on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deb-tools.sh

deb_version=
out=target/debian
build=yes
while [ $# -gt 0 ]; do
    case "$1" in
    --deb-version) deb_version=$2; shift 2 ;;
    --output) out=$2; shift 2 ;;
    --no-build) build=no; shift ;; # package the binary already built (deb-check's upgrade)
    *) echo "usage: $0 [--deb-version V] [--output DIR] [--no-build]" >&2; exit 64 ;;
    esac
done

deb_build_tools
export CARGO_TARGET_DIR=$DEB_TARGET_DIR

zigbuild() {
    deb_log "cargo zigbuild --release --target $DEB_RUST_TARGET.$DEB_GLIBC"
    cargo zigbuild --locked --release -p sega-uploader --target "$DEB_RUST_TARGET.$DEB_GLIBC" >&2
}
# zig 0.15 builds its runtime libraries (compiler_rt, libubsan) into its cache on the first
# link, in parallel threads, and now and then that fails ("sub-compilation of compiler_rt
# failed ... No available targets are compatible with triple"; seen once in five cold
# builds here). A second attempt links against what the first one cached.
if [ "$build" = yes ] && ! zigbuild; then
    deb_log "the link failed: retrying once (see the comment in $0)"
    zigbuild
fi

mkdir -p "$out"
deb_args=(--no-build --no-strip --target "$DEB_RUST_TARGET" -p sega-uploader --output "$out/")
[ -z "$deb_version" ] || deb_args+=(--deb-version "$deb_version")
deb_log "cargo deb ${deb_args[*]}"
deb=$(cargo deb "${deb_args[@]}" | tail -n 1)
[ -f "$deb" ] || { echo "cargo deb did not report a package (got: $deb)" >&2; exit 1; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
dpkg-deb -R "$deb" "$tmp/pkg"
# md5sums: every shipped file except the conffiles (whose hashes dpkg keeps itself).
(
    cd "$tmp/pkg"
    find . -path ./DEBIAN -prune -o -type f -printf '%P\n' | LC_ALL=C sort |
        grep -vxF -f <(sed 's|^/||' DEBIAN/conffiles) | tr '\n' '\0' | xargs -0 md5sum
) >"$tmp/md5sums"
install -m 0644 "$tmp/md5sums" "$tmp/pkg/DEBIAN/md5sums"
touch -r "$tmp/pkg/DEBIAN/control" "$tmp/pkg/DEBIAN/md5sums"
# Same timestamps as cargo-deb's (SOURCE_DATE_EPOCH clamps the directories dpkg-deb -R made).
SOURCE_DATE_EPOCH=$(stat -c %Y "$tmp/pkg/DEBIAN/control") \
    dpkg-deb --root-owner-group -Zxz -z9 -b "$tmp/pkg" "$deb" >/dev/null
echo "$deb"
