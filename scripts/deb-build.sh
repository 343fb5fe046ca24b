#!/usr/bin/env bash
# `make deb`: builds target/debian/sega-uploader_<version>_amd64.deb.
#
#   scripts/deb-build.sh [--deb-version V] [--output DIR] [--no-build]
#
# 1. The release binary with cargo-zigbuild against glibc 2.27 (Ubuntu 18.04), in its own
#    target dir (target/zig) so the debug builds of `make test` are left alone, with the
#    `postgres` feature: libpq.so.5 linked dynamically (the package depends on libpq5).
#    Checked with objdump before packing: NEEDED has libpq.so.5, no GLIBC symbol above 2.27.
# 2. cargo-deb packs it with the assets and maintainer scripts named in Cargo.toml
#    ([package.metadata.deb]), without building again (--no-build: cargo-deb's own
#    zigbuild mode looks for the binary in the wrong place).
# 3. The package is unpacked and packed again with dpkg-deb to add the md5sums file cargo-deb
#    does not write (`dpkg --verify` and debsums use it) and to gzip NEWS.Debian (Debian
#    policy 12.7; cargo-deb compresses only files named NEWS or changelog); members stay
#    xz, which dpkg on Ubuntu 18.04 reads (it cannot read zstd).
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

bin=$DEB_TARGET_DIR/$DEB_RUST_TARGET/release/sega-uploader

# libpq for zig's linker: a directory holding nothing but a libpq.so symlink to this
# machine's libpq.so.5 (whose SONAME, libpq.so.5, becomes the binary's NEEDED entry), and
# PQ_LIB_DIR pointing at it. Without PQ_LIB_DIR pq-sys asks pkg-config/pg_config, which
# name /usr/lib/x86_64-linux-gnu: that directory on the link line also offers zig this
# machine's libc.so, libm.so, libgcc_s.so... next to its own glibc 2.27 stubs (a probe
# build still took the stubs, but nothing but libpq should be able to come from this
# machine; check_binary below fails the build if it does). libpq's symbols are unversioned:
# which libpq5 they need is checked by deb-check against libpq5's symbols file.
pqlib=$PWD/$DEB_TARGET_DIR/pqlib
pq_build_dirs() { ls -d "$DEB_TARGET_DIR/$DEB_RUST_TARGET"/release/build/pq-sys-*/ 2>/dev/null || true; }
prepare_pqlib() {
    local so
    so=$(deb_libpq)
    rm -rf "$pqlib"
    mkdir -p "$pqlib"
    ln -s "$so" "$pqlib/libpq.so"
    export PQ_LIB_DIR=$pqlib
    unset PQ_LIB_DIR_X86_64_UNKNOWN_LINUX_GNU PQ_LIB_STATIC PQ_LIB_STATIC_X86_64_UNKNOWN_LINUX_GNU
    # pq-sys 0.7.8 declares rerun-if-env-changed="PQ_LIB_DIR" with quotes, so cargo never
    # re-runs its build script when PQ_LIB_DIR changes: a pq-sys built here without this
    # directory (a hand-run `cargo zigbuild`) would be reused. Drop such a stale one.
    local d stale=no
    for d in $(pq_build_dirs); do
        [ -f "$d/output" ] || continue
        grep -qxF "cargo:rustc-link-search=native=$pqlib" "$d/output" || stale=yes
    done
    if [ "$stale" = yes ]; then
        deb_log "pq-sys was built without PQ_LIB_DIR=$pqlib: cargo clean -p pq-sys"
        cargo clean --quiet --release --target "$DEB_RUST_TARGET" -p pq-sys >&2
    fi
}
zigbuild() {
    deb_log "cargo zigbuild --release --features postgres --target $DEB_RUST_TARGET.$DEB_GLIBC (PQ_LIB_DIR=$PQ_LIB_DIR)"
    cargo zigbuild --locked --release -p sega-uploader --features postgres \
        --target "$DEB_RUST_TARGET.$DEB_GLIBC" >&2
}
# The binary about to be packed: libpq.so.5 among its NEEDED, no GLIBC symbol version above
# $DEB_GLIBC (the glibc 2.27 stubs were used, not this machine's libc).
check_binary() {
    local needed glibc top
    needed=$(objdump -p "$bin" | awk '/NEEDED/ { print $2 }' | tr '\n' ' ')
    glibc=$(objdump -T "$bin" | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -n 1)
    top=$(printf '%s\n%s\n' "$glibc" "$DEB_GLIBC" | sort -V | tail -n 1)
    deb_log "$bin: NEEDED $needed; highest symbol GLIBC_$glibc"
    case " $needed " in
    *" libpq.so.5 "*) ;;
    *) echo "$bin does not link libpq.so.5 (NEEDED: $needed)" >&2; return 1 ;;
    esac
    [ "$top" = "$DEB_GLIBC" ] || { echo "$bin needs GLIBC_$glibc (> $DEB_GLIBC)" >&2; return 1; }
}
# zig 0.15 builds its runtime libraries (compiler_rt, libubsan) into its cache on the first
# link, in parallel threads, and now and then that fails ("sub-compilation of compiler_rt
# failed ... No available targets are compatible with triple"; seen once in five cold
# builds here). A second attempt links against what the first one cached.
if [ "$build" = yes ]; then
    prepare_pqlib
    if ! zigbuild; then
        deb_log "the link failed: retrying once (see the comment in $0)"
        zigbuild
    fi
fi
check_binary

mkdir -p "$out"
deb_args=(--no-build --no-strip --target "$DEB_RUST_TARGET" -p sega-uploader --output "$out/")
[ -z "$deb_version" ] || deb_args+=(--deb-version "$deb_version")
deb_log "cargo deb ${deb_args[*]}"
deb=$(cargo deb "${deb_args[@]}" | tail -n 1)
[ -f "$deb" ] || { echo "cargo deb did not report a package (got: $deb)" >&2; exit 1; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
dpkg-deb -R "$deb" "$tmp/pkg"
gzip -9n "$tmp/pkg/usr/share/doc/sega-uploader/NEWS.Debian"
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
