# shellcheck shell=bash
# Sourced by scripts/deb-build.sh and scripts/deb-check.sh: the pinned packaging tools, and
# functions that install whichever of them is missing (CI starts from a bare Debian 12 with
# Rust and Python; a developer's machine keeps what it installed).
#
# Pins (bump them together, then run `make deb-check`):
#   zig           from PyPI `ziglang`        the C toolchain and glibc 2.27 stubs for linking
#   cargo-zigbuild from PyPI `cargo-zigbuild` (a prebuilt binary: 2 s to install instead of
#                                             about 2 min for `cargo install` on 2 cores)
#   cargo-deb     from crates.io, `cargo install --locked`
# and libpq5 from the distribution (the `postgres` feature links libpq.so.5 dynamically;
# the binary is linked against this machine's copy, the package depends on libpq5).
DEB_ZIG_VERSION=0.15.2
DEB_ZIGBUILD_VERSION=0.24.1
DEB_CARGO_DEB_VERSION=3.8.0
# The oldest glibc we support: Ubuntu 18.04's.
DEB_GLIBC=2.27
DEB_RUST_TARGET=x86_64-unknown-linux-gnu
# A target dir of its own, so the release build never fights the debug builds of `make test`.
DEB_TARGET_DIR=target/zig

deb_log() { printf '==> %s\n' "$*" >&2; }

# pip's console scripts (cargo-zigbuild) land in the interpreter's scripts directory, which
# is not always on PATH (pyenv shims, --user installs).
deb_pip_path() {
    local scripts
    scripts=$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')
    case ":$PATH:" in *":$scripts:"*) ;; *) PATH="$scripts:$PATH" ;; esac
    case ":$PATH:" in *":$HOME/.cargo/bin:"*) ;; *) PATH="$HOME/.cargo/bin:$PATH" ;; esac
    export PATH
}

# zig, cargo-zigbuild and cargo-deb at their pinned versions.
deb_build_tools() {
    deb_pip_path
    local want=()
    [ "$(python3 -m ziglang version 2>/dev/null)" = "$DEB_ZIG_VERSION" ] ||
        want+=("ziglang==$DEB_ZIG_VERSION")
    [ "$(cargo-zigbuild --version 2>/dev/null)" = "cargo-zigbuild $DEB_ZIGBUILD_VERSION" ] ||
        want+=("cargo-zigbuild==$DEB_ZIGBUILD_VERSION")
    if [ ${#want[@]} -gt 0 ]; then
        deb_log "pip install ${want[*]}"
        python3 -m pip install --quiet --disable-pip-version-check "${want[@]}"
    fi
    if [ "$(cargo-deb --version 2>/dev/null)" != "cargo-deb $DEB_CARGO_DEB_VERSION" ]; then
        deb_log "cargo install cargo-deb@$DEB_CARGO_DEB_VERSION"
        cargo install --quiet --locked "cargo-deb@$DEB_CARGO_DEB_VERSION"
    fi
    # cargo-zigbuild tries `python3 -m ziglang` (the pinned one) before any zig on PATH.
    command -v objdump >/dev/null || deb_apt binutils # deb-build.sh checks the binary with it
    deb_libpq >/dev/null
}

# deb_apt PACKAGE...: apt-get install (as root; otherwise says what is missing).
deb_apt() {
    if [ "$(id -u)" != 0 ]; then
        echo "missing: apt-get install $*" >&2
        return 1
    fi
    deb_log "apt-get install $*"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# Prints the path of this machine's libpq.so.5 (installing libpq5 if it is missing and we
# are root). Only the runtime library is needed to link: pq-sys ships its bindings, so no
# headers (libpq-dev) and no pg_config.
deb_libpq() {
    # awk reads ldconfig's whole output: leaving early would kill ldconfig with SIGPIPE,
    # which pipefail turns into a failure (exit 141) now and then.
    local so
    so=$(PATH=$PATH:/sbin:/usr/sbin ldconfig -p | awk '$1 == "libpq.so.5" && /x86-64/ && !n++ { print $NF }')
    if [ -z "$so" ]; then
        deb_apt libpq5 >&2 || return 1
        so=$(PATH=$PATH:/sbin:/usr/sbin ldconfig -p | awk '$1 == "libpq.so.5" && /x86-64/ && !n++ { print $NF }')
    fi
    [ -n "$so" ] || { echo "libpq.so.5 not found after installing libpq5" >&2; return 1; }
    echo "$so"
}

# Debian packages for the checks: lintian, debootstrap (the throwaway roots), objdump
# (binutils), systemd-analyze (systemd; the analyzer runs without systemd as PID 1),
# systemd-nspawn (systemd-container; boots a root with systemd to run the unit for real),
# the PostgreSQL server (postgresql; a throwaway one whose socket the container's daemon uses).
deb_check_tools() {
    local want=()
    compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null && id postgres >/dev/null 2>&1 ||
        want+=(postgresql)
    command -v lintian >/dev/null || want+=(lintian)
    command -v debootstrap >/dev/null || want+=(debootstrap)
    command -v systemd-nspawn >/dev/null || want+=(systemd-container)
    command -v objdump >/dev/null || want+=(binutils)
    command -v systemd-analyze >/dev/null || want+=(systemd)
    command -v man >/dev/null || want+=(man-db)
    [ ${#want[@]} -eq 0 ] || deb_apt "${want[@]}"
}
