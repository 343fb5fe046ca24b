#!/usr/bin/env bash
# `make deb-check`: builds the .deb and checks it the way an operator will use it.
#
#  - static: xz members (dpkg on Ubuntu 18.04 cannot read zstd), control fields and the
#    exact Depends, the file list, the default config, the highest GLIBC symbol (<= 2.27),
#    libpq.so.5 linked (the `postgres` feature) with no libpq function newer than libpq5 10
#    (Ubuntu 18.04's), no libssl of its own, lintian (0 errors, 0 warnings), the man page,
#    the unit's `systemd-analyze security` score (<= 1.5) and `systemd-analyze verify` (also
#    with the example drop-ins);
#  - installed into a throwaway Debian 11 root (debootstrap, cached under target/deb-cache):
#    Debian 11's dpkg 1.20 cannot read zstd either, its glibc is 2.31, and no systemd runs
#    there, as in a container or an image build. Its libpq5 is 13. Install, run it (libpq
#    resolved by the dynamic loader), its bash completion, `check` as a monitoring user in
#    the group sega, re-run postinst, upgrade to a rebuilt package with an edited conffile,
#    remove, purge (which keeps the sega user and the administrator's drop-ins, and says
#    so), remove those by hand, and compare the root with how it was before: nothing else
#    may be left;
#  - under a real systemd: a Debian 12 root with systemd booted by systemd-nspawn (no network
#    but its own loopback), the package installed, the service started at boot as enabled:
#    READY, the sandbox in force on the running process, an image detected and an upload
#    attempted (to 127.0.0.1:9, nothing listens), reload, graceful stop, and a broken config
#    ending in exit 78 without a restart loop; then the same service with database.url on a
#    throwaway PostgreSQL server of this machine, reached through its unix socket (bind-
#    mounted into the container; the server listens on no TCP port): the ledger's tables
#    are created, an image is recorded there and an upload attempted; then the shipped
#    example drop-ins copied in as the README says: an image folder under /home is read,
#    the metrics file is written in node_exporter's directory, the extra address is allowed; then over https: the
#    test endpoint (sega-testsrv, built here, copied in) behind its TLS front on the
#    container's loopback, with a CA it makes at start, trusted through upload.tls.ca_file:
#    check-config shakes hands with it, and an image arrives whole, its {sha256} field
#    equal to the endpoint's own hash of what it received.
#
# Needs root (debootstrap, chroot, nspawn) and, the first time, the Debian mirror
# ($DEB_CHECK_MIRROR, default deb.debian.org), PyPI and crates.io; installs what it needs
# (scripts/deb-tools.sh). Nothing outside target/ is changed except for those tools. The
# logs of every step stay in target/deb-check/. Ends with "deb-check: N passed, M failed";
# exit 1 if anything failed.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deb-tools.sh

MIRROR=${DEB_CHECK_MIRROR:-http://deb.debian.org/debian}
SUITE=bullseye
# The package's Depends (libc6 comes with any root) and logrotate for its logrotate file.
# The cache tarballs are named after these lists, so changing one debootstraps afresh.
INCLUDE=adduser,procps,libpq5,logrotate
MAX_GLIBC=$DEB_GLIBC
MAX_EXPOSURE=1.5
WORK=target/deb-check
CACHE=target/deb-cache/$SUITE-minbase-${INCLUDE//,/-}.tar
BOOT_SUITE=bookworm
BOOT_INCLUDE=systemd,systemd-sysv,adduser,procps,libpq5
BOOT_CACHE=target/deb-cache/$BOOT_SUITE-minbase-${BOOT_INCLUDE//,/-}.tar

[ "$(id -u)" = 0 ] || { echo "deb-check: needs root (debootstrap, chroot)" >&2; exit 1; }

t0=$(date +%s)
passed=0
failed=0
ok() { passed=$((passed + 1)); echo "ok   $*"; }
bad() { failed=$((failed + 1)); echo "FAIL $*"; }
# check DESCRIPTION COMMAND...: runs COMMAND quietly, ok/FAIL by its exit status.
check() {
    local what=$1
    shift
    if "$@"; then ok "$what"; else bad "$what"; fi
}
# quiet LOG COMMAND...: runs COMMAND with its output appended to LOG; on failure shows the
# end of LOG.
quiet() {
    local log=$1
    shift
    if "$@" >>"$log" 2>&1; then return 0; fi
    tail -n 20 "$log" | sed 's/^/     | /'
    return 1
}
# same STRING-A STRING-B DESCRIPTION
same() {
    if [ "$1" = "$2" ]; then ok "$3"; else bad "$3: got '$1', want '$2'"; fi
}

deb_check_tools
rm -rf "$WORK"
mkdir -p "$WORK"

# fetch_root SUITE PACKAGES CACHE: a minimal SUITE root with PACKAGES, debootstrapped once
# (about 30 s each) into the tarball CACHE; later runs reuse it.
fetch_root() {
    local suite=$1 include=$2 cache=$3
    [ ! -f "$cache" ] || return 0
    mkdir -p "$(dirname "$cache")"
    rm -rf "$cache.d"
    if ! debootstrap --variant=minbase --include="$include" "$suite" "$cache.d" "$MIRROR" \
        >"$WORK/debootstrap-$suite.log" 2>&1; then
        tail -n 20 "$WORK/debootstrap-$suite.log" >&2
        return 1
    fi
    tar -C "$cache.d" -cf "$cache.tmp" . && mv "$cache.tmp" "$cache"
    rm -rf "$cache.d"
}
# new_root JOB CACHE DIR: waits for the fetch_root JOB, then DIR becomes a fresh copy.
new_root() {
    wait "$1" || { echo "deb-check: debootstrap of $2 failed" >&2; exit 1; }
    mkdir -p "$3"
    tar -C "$3" -xf "$2"
}
# Tarballs of include lists no longer used (the name is the key) are dropped: 200 MB each.
for f in target/deb-cache/*.tar; do
    [ -e "$f" ] || continue
    [ "$f" = "$CACHE" ] || [ "$f" = "$BOOT_CACHE" ] || rm -f "$f"
done
# Both roots download while the binary builds. A run that fails early still waits for them
# (a minute at most), so it leaves no process behind and the next run finds them cached.
fetch_root "$SUITE" "$INCLUDE" "$CACHE" &
fetch_root=$!
fetch_root "$BOOT_SUITE" "$BOOT_INCLUDE" "$BOOT_CACHE" &
fetch_boot=$!
trap 'wait 2>/dev/null || true' EXIT

# --- build --------------------------------------------------------------------------------
deb=$(scripts/deb-build.sh)
version=$(dpkg-deb -f "$deb" Version)
size=$(stat -c %s "$deb")
echo "built $deb ($size bytes, version $version)"
# The https endpoint for the container: the test endpoint as a program, built for this
# machine (the container is Debian 12, as this machine is; a debug build, whose
# dependencies `make test` has already built).
testsrv=target/debug/sega-testsrv
"${CARGO:-cargo}" build -q -p sega-testsrv --bin sega-testsrv >"$WORK/testsrv-build.log" 2>&1 ||
    { tail -n 20 "$WORK/testsrv-build.log" >&2; echo "deb-check: building sega-testsrv failed" >&2; exit 1; }
tb=$(date +%s)

# --- static checks ------------------------------------------------------------------------
same "$(ar t "$deb" | tr '\n' ' ')" "debian-binary control.tar.xz data.tar.xz " \
    "members are xz-compressed (readable by dpkg on Ubuntu 18.04)"
same "$(dpkg-deb -f "$deb" Package)" sega-uploader "Package"
same "$(dpkg-deb -f "$deb" Architecture)" amd64 "Architecture"
same "$version" "$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)-1" "Version follows Cargo.toml"
same "$(dpkg-deb -f "$deb" Depends)" "adduser, libc6 (>= 2.27), libpq5, procps" "Depends"
same "$(dpkg-deb -I "$deb" conffiles | LC_ALL=C sort | tr '\n' ' ')" "/etc/logrotate.d/sega-uploader /etc/sega/config.json " \
    "conffiles"

x=$WORK/extract
dpkg-deb -x "$deb" "$x"
missing=
for f in usr/bin/sega-uploader lib/systemd/system/sega-uploader.service etc/sega/config.json \
    etc/logrotate.d/sega-uploader usr/share/man/man8/sega-uploader.8.gz \
    usr/share/doc/sega-uploader/README.md usr/share/doc/sega-uploader/README.ko.md \
    usr/share/doc/sega-uploader/copyright usr/share/doc/sega-uploader/changelog.Debian.gz \
    usr/share/doc/sega-uploader/NEWS.Debian.gz usr/share/bash-completion/completions/sega-uploader \
    usr/share/doc/sega-uploader/examples/endpoint-address.conf \
    usr/share/doc/sega-uploader/examples/second-image-root.conf \
    usr/share/doc/sega-uploader/examples/metrics-directory.conf; do
    [ -f "$x/$f" ] || missing="$missing $f"
done
same "$missing" "" "the package holds the binary, unit, config, logrotate, man page, docs, NEWS.Debian, completion, example drop-ins"
same "$(zcat "$x/usr/share/doc/sega-uploader/NEWS.Debian.gz" | head -n 1)" \
    "sega-uploader ($version) unstable; urgency=medium" "NEWS.Debian.gz has an entry for this version"
check "the packaged config.json is etc/config.json (the DESIGN.md defaults)" \
    cmp -s etc/config.json "$x/etc/sega/config.json"

glibc=$(objdump -T "$x/usr/bin/sega-uploader" | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' |
    sort -uV | tail -n 1)
top=$(printf '%s\n%s\n' "$glibc" "$MAX_GLIBC" | sort -V | tail -n 1)
same "$top" "$MAX_GLIBC" "highest GLIBC symbol is GLIBC_$glibc (at most $MAX_GLIBC)"
needed=$(objdump -p "$x/usr/bin/sega-uploader" | awk '/NEEDED/ {print $2}' | tr '\n' ' ')
case " $needed" in
*" libpq.so.5 "*) ok "links libpq.so.5 dynamically (the postgres feature)" ;;
*) bad "does not link libpq.so.5: NEEDED is $needed" ;;
esac
# libssl comes into the process only through libpq5 (TLS to the database server, if asked).
case "$needed" in
*libssl* | *libcrypto*) bad "links no libssl itself: $needed" ;;
*) ok "links no libssl itself (NEEDED: $needed)" ;;
esac
# libpq's symbols are unversioned, so nothing in the binary says which libpq5 it needs:
# libpq5's symbols file (this machine's, the libpq the binary was linked against) says in
# which version each function appeared. All of them must be in libpq5 10, Ubuntu 18.04's,
# which is what lets Depends name libpq5 without a version.
pq_syms=/var/lib/dpkg/info/libpq5:amd64.symbols
# The binary's undefined symbols that libpq5 exports, with the version each appeared in.
objdump -T "$x/usr/bin/sega-uploader" | awk '/\*UND\*/ { print $NF }' | LC_ALL=C sort -u |
    awk 'NR == FNR { use[$1] = 1; next } { s = $1; sub(/@Base$/, "", s) } (s in use) { print s, $2 }' \
        - "$pq_syms" >"$WORK/libpq-functions.txt"
pq_count=$(grep -c . "$WORK/libpq-functions.txt" || true)
pq_need=0
while read -r _ v; do
    ! dpkg --compare-versions "$v" gt "$pq_need" || pq_need=$v
done <"$WORK/libpq-functions.txt"
if [ "$pq_count" -gt 0 ] && dpkg --compare-versions "$pq_need" le 10; then
    ok "the $pq_count libpq functions it calls are all in libpq5 $pq_need or older (Ubuntu 18.04 has 10)"
else
    bad "libpq functions: $pq_count, the newest from libpq5 '$pq_need' (at most 10; see $WORK/libpq-functions.txt)"
fi

lintian --allow-root -I --fail-on error,warning "$deb" >"$WORK/lintian.txt" 2>&1 && lint_rc=0 || lint_rc=$?
same "$(grep -c '^[EW]: ' "$WORK/lintian.txt" || true)" 0 "lintian: 0 errors, 0 warnings"
same "$lint_rc" 0 "lintian exit status"

same "$(LC_ALL=C.UTF-8 MANWIDTH=80 man --warnings -E UTF-8 -l "$x/usr/share/man/man8/sega-uploader.8.gz" 2>&1 >/dev/null)" \
    "" "the man page renders without groff warnings"

unit=$x/lib/systemd/system/sega-uploader.service
systemd-analyze security --offline=true --no-pager "$unit" >"$WORK/security.txt" 2>&1 || true
score=$(sed -n 's/.*Overall exposure level for sega-uploader.service: \([0-9.]*\).*/\1/p' "$WORK/security.txt")
if [ -n "$score" ] && awk -v s="$score" -v m="$MAX_EXPOSURE" 'BEGIN { exit !(s <= m) }'; then
    ok "systemd-analyze security --offline=true: $score (at most $MAX_EXPOSURE)"
else
    bad "systemd-analyze security --offline=true: '$score' (at most $MAX_EXPOSURE; see $WORK/security.txt)"
fi
# verify needs the units the service depends on and its Exec* binaries: a small root with
# this machine's systemd units, /bin/kill and the package's files.
v=$WORK/verify-root
mkdir -p "$v/usr/lib/systemd" "$v/bin"
cp -a "$x/." "$v/"
cp -a /usr/lib/systemd/system "$v/usr/lib/systemd/"
cp "$(type -P kill)" "$v/bin/kill"
verify=$(systemd-analyze verify --root="$v" --man=no sega-uploader.service 2>&1) && vrc=0 || vrc=$?
same "$vrc:$verify" "0:" "systemd-analyze verify is clean"
mkdir -p "$v/etc/systemd/system/sega-uploader.service.d"
cp "$x"/usr/share/doc/sega-uploader/examples/*.conf "$v/etc/systemd/system/sega-uploader.service.d/"
verify=$(systemd-analyze verify --root="$v" --man=no sega-uploader.service 2>&1) && vrc=0 || vrc=$?
same "$vrc:$verify" "0:" "systemd-analyze verify is clean with the example drop-ins"

# --- the throwaway root -------------------------------------------------------------------
R=$WORK/root
new_root "$fetch_root" "$CACHE" "$R"

# What the root holds, to compare after the purge. dpkg's own records and logs change by
# design; passwd/group backups are compared by content below.
snapshot() {
    (cd "$R" && find . -xdev \( -path ./var/lib/dpkg -o -path ./var/log -o -path ./tmp \
        -o -path ./var/cache/debconf \) -prune -o -printf '%p %U:%G %m %y\n' |
        grep -vE '^\./etc/(passwd|group|shadow|gshadow)- ' | LC_ALL=C sort)
    cat "$R/etc/passwd" "$R/etc/group" "$R/etc/shadow" "$R/etc/gshadow"
}
snapshot >"$WORK/before.txt"

# In a network namespace of its own (no network at all): nothing run in the root can reach
# the endpoint, whatever the config says.
in_root() { unshare --net chroot "$R" "$@"; }
as_sega() { unshare --net chroot --userspec=sega:sega "$R" "$@"; }
perms() { in_root stat -c '%U:%G %a' "$1"; }

cp "$deb" "$R/tmp/"
check "dpkg -i installs it (systemd not running)" \
    quiet "$WORK/install.log" in_root dpkg -i "/tmp/$(basename "$deb")"
same "$(in_root getent passwd sega | cut -d: -f6,7)" "/var/lib/sega:/usr/sbin/nologin" \
    "system user sega exists (home /var/lib/sega, no login shell)"
uid=$(in_root id -u sega || echo none)
check "sega is a system uid ($uid)" test "$uid" -lt 1000
same "$(in_root id -gn sega)" sega "group sega exists and is sega's primary group"
same "$(perms /etc/sega/config.json)" "root:sega 640" "conffile /etc/sega/config.json is root:sega 0640"
same "$(perms /var/lib/sega)" "sega:sega 750" "/var/lib/sega is sega:sega 0750"
same "$(perms /var/log/sega)" "sega:sega 750" "/var/log/sega is sega:sega 0750"
same "$(in_root readlink /etc/systemd/system/multi-user.target.wants/sega-uploader.service)" \
    /lib/systemd/system/sega-uploader.service "the service is enabled"
in_root ldd /usr/bin/sega-uploader >"$WORK/ldd.txt" 2>&1 || true
pq_so=$(awk '$1 == "libpq.so.5" { print $3 }' "$WORK/ldd.txt")
if ! grep -q 'not found' "$WORK/ldd.txt" && [ -n "$pq_so" ] && [ -f "$R$pq_so" ]; then
    ok "ldd: libpq.so.5 => $pq_so ($SUITE's libpq5), no library missing"
else
    bad "ldd: libpq.so.5 not resolved or a library missing (see $WORK/ldd.txt)"
fi
same "$(in_root sega-uploader --version)" "sega-uploader ${version%-*} (features: postgres, tls)" \
    "sega-uploader --version runs and names the compiled features"
# The completion, as bash-completion loads it, offers the commands the binary lists.
commands=$(in_root sega-uploader --help | sed -n '/^Commands:/,/^$/s/^  \([a-z-]*\) .*/\1/p' | tr '\n' ' ')
completed=$(in_root bash --norc -c '. /usr/share/bash-completion/completions/sega-uploader &&
    COMP_WORDS=(sega-uploader "") COMP_CWORD=1 && _sega_uploader && printf "%s " "${COMPREPLY[@]}"')
same "$completed" "$commands" "bash completion offers every command of --help ($commands)"
check "sega-uploader check-config --offline accepts the installed config (as user sega)" \
    quiet "$WORK/check-config.txt" as_sega sega-uploader check-config --offline
check "sega-uploader scan runs as sega and creates its database" \
    quiet "$WORK/scan.txt" as_sega sega-uploader scan
check "the database is in /var/lib/sega" test -f "$R/var/lib/sega/sega-uploader.db"
# NRPE without sudo: a monitoring user in the group sega runs the plugin (no daemon ran).
in_root adduser --system --quiet --no-create-home nagios >/dev/null
in_root adduser --quiet nagios sega >/dev/null
in_root chroot --userspec=nagios:nogroup --groups=sega / sega-uploader check \
    >"$WORK/check-nagios.txt" 2>"$WORK/check-nagios.err" && crc=0 || crc=$?
case "$crc:$(cat "$WORK/check-nagios.txt")" in
"2:SEGA CRITICAL - daemon not running | "*" heartbeat_age=U;30;60 "*) ok "check as a member of the group sega: $(cat "$WORK/check-nagios.txt")" ;;
*) bad "check as a member of the group sega: exit $crc: $(cat "$WORK/check-nagios.txt")" ;;
esac
in_root deluser --system --quiet nagios >/dev/null
same "$(in_root dpkg --verify sega-uploader)" "" "dpkg --verify: every file as shipped (md5sums)"
# A real rotation of a log.file: as the sega user (su), copied then truncated.
as_sega sh -c 'umask 027; echo line >/var/log/sega/sega-uploader.log' # the unit's UMask
check "logrotate rotates /var/log/sega/*.log" \
    quiet "$WORK/logrotate.txt" in_root logrotate -v -f -s /tmp/logrotate.state /etc/logrotate.d/sega-uploader
same "$(perms /var/log/sega/sega-uploader.log.1):$(in_root stat -c %s /var/log/sega/sega-uploader.log)" \
    "sega:sega 640:0" "the rotated log is the sega user's, the live one truncated"
rm -f "$R/tmp/logrotate.state"

# Idempotent: the same postinst again, then the same package again.
check "postinst configure runs a second time" \
    quiet "$WORK/install.log" in_root env DPKG_MAINTSCRIPT_PACKAGE=sega-uploader DPKG_MAINTSCRIPT_NAME=postinst \
    /var/lib/dpkg/info/sega-uploader.postinst configure "$version"
check "reinstalling the same package works" \
    quiet "$WORK/install.log" in_root dpkg -i "/tmp/$(basename "$deb")"
same "$(in_root id -u sega):$(perms /etc/sega/config.json):$(perms /var/lib/sega)" \
    "$uid:root:sega 640:sega:sega 750" "user, conffile and state directory unchanged by the re-runs"

# Upgrade to a rebuilt package: an edited conffile is kept, so are the user and the data.
sed -i 's/"lookback_days": 1,/"lookback_days": 2,/' "$R/etc/sega/config.json"
up=$(scripts/deb-build.sh --no-build --deb-version "${version%-*}-2" --output "$WORK/upgrade")
cp "$up" "$R/tmp/"
check "upgrade to ${version%-*}-2" \
    quiet "$WORK/upgrade.log" in_root dpkg -i --force-confdef --force-confold "/tmp/$(basename "$up")"
same "$(in_root dpkg-query -W -f '${Version}' sega-uploader)" "${version%-*}-2" "the new version is installed"
check "the edited conffile survived the upgrade" grep -q '"lookback_days": 2,' "$R/etc/sega/config.json"
same "$(perms /etc/sega/config.json)" "root:sega 640" "the conffile is still root:sega 0640"
same "$(in_root id -u sega)" "$uid" "the sega user kept its uid"
check "the database survived the upgrade" test -f "$R/var/lib/sega/sega-uploader.db"
check "check-config --offline accepts the edited config" \
    quiet "$WORK/check-config-2.txt" as_sega sega-uploader check-config --offline

# Remove keeps the configuration, the data and the user; purge removes everything.
check "dpkg -r removes it" quiet "$WORK/remove.log" in_root dpkg -r sega-uploader
check "the binary and the unit are gone" \
    test ! -e "$R/usr/bin/sega-uploader" -a ! -e "$R/lib/systemd/system/sega-uploader.service"
check "remove keeps the conffile, the database and the user" \
    test -f "$R/etc/sega/config.json" -a -f "$R/var/lib/sega/sega-uploader.db" -a -n "$(in_root getent passwd sega)"
# An administrator's drop-in, made from a shipped example: not the package's to delete.
dropins=$R/etc/systemd/system/sega-uploader.service.d
mkdir -p "$dropins"
cp "$x/usr/share/doc/sega-uploader/examples/endpoint-address.conf" "$dropins/"
check "dpkg -P purges it" quiet "$WORK/purge.log" in_root dpkg -P sega-uploader
same "$(in_root id -u sega):$(in_root id -gn sega)" "$uid:sega" "purge keeps the system user and group sega (Debian's practice)"
check "purge keeps the administrator's drop-in" test -f "$dropins/endpoint-address.conf"
purge_said() {
    grep -q "the system user and group 'sega' are kept" "$WORK/purge.log" &&
        grep -q "drop-ins in /etc/systemd/system/sega-uploader.service.d/ are kept" "$WORK/purge.log"
}
check "purge says what it kept" purge_said
check "/etc/sega, /var/lib/sega and /var/log/sega are gone" \
    test ! -e "$R/etc/sega" -a ! -e "$R/var/lib/sega" -a ! -e "$R/var/log/sega"
# What purge told the administrator to do by hand; after it, nothing may be left.
rm -r "$dropins"
in_root deluser --system --quiet sega >/dev/null 2>&1
same "$(in_root getent passwd sega)$(in_root getent group sega)" "" "deluser --system sega removes user and group (as purge says)"
st=$(in_root dpkg-query -W -f '${db:Status-Status}' sega-uploader 2>/dev/null || true)
same "${st:-not-installed}" not-installed "dpkg no longer knows the package"
rm -f "$R/tmp/$(basename "$deb")" "$R/tmp/$(basename "$up")"
snapshot >"$WORK/after.txt"
if diff -u "$WORK/before.txt" "$WORK/after.txt" >"$WORK/leftovers.diff"; then
    ok "after the purge the root is as it was before the install"
else
    bad "the purge left something behind:"
    cat "$WORK/leftovers.diff"
fi

tp=$(date +%s)

# --- under a real systemd ---------------------------------------------------------------
B=$WORK/boot
new_root "$fetch_boot" "$BOOT_CACHE" "$B"
cp "$deb" "$B/tmp/"
check "install into a $BOOT_SUITE root with systemd" \
    quiet "$WORK/boot-install.log" chroot "$B" dpkg -i "/tmp/$(basename "$deb")"
# Nothing may leave this machine: the container has only its own loopback, and the
# endpoint is a closed port on it.
sed -i 's|"url": "[^"]*"|"url": "http://127.0.0.1:9/upload"|' "$B/etc/sega/config.json"
today=$(date -u +%F)
mkdir -p "$B/data/Sega_1/$today" "$B/data/Sega_2" "$B/data/Sega_3"
chroot "$B" sh -c 'chgrp -R sega /data && chmod -R 0750 /data'
cat >"$B/usr/local/bin/deb-selftest" <<'SELFTEST'
#!/bin/sh
# Runs once at boot, after sega-uploader.service; writes KEY=VALUE lines, then powers off.
out=/deb-selftest.out
say() { echo "$1=$2" >>"$out"; }
prop() { systemctl show -P "$1" sega-uploader.service; }
# shows PATTERN ARGS...: prints 1 once `sega-uploader ARGS` prints PATTERN (within 10 s).
shows() {
    pat=$1
    shift
    for i in $(seq 1 20); do
        sega-uploader "$@" 2>/dev/null | grep -q "$pat" && { echo 1; return; }
        sleep 0.5
    done
}
for i in $(seq 1 40); do [ "$(prop SubState)" = running ] && break; sleep 0.5; done
say enabled "$(systemctl is-enabled sega-uploader.service)"
say state "$(prop ActiveState)/$(prop SubState)"
say status_text "$(prop StatusText)"
pid=$(prop MainPID)
say uid "$(awk '/^Uid:/ {print $2}' /proc/$pid/status)/$(id -u sega)"
say nonewprivs "$(awk '/^NoNewPrivs:/ {print $2}' /proc/$pid/status)"
say seccomp "$(awk '/^Seccomp:/ {print $2}' /proc/$pid/status)"
say capeff "$(awk '/^CapEff:/ {print $2}' /proc/$pid/status)"
say etc_write "$(nsenter -t "$pid" -m sh -c 'touch /etc/sega/x 2>&1 | grep -c "Read-only"')"
say state_write "$(nsenter -t "$pid" -m sh -c 'touch /var/lib/sega/x && rm /var/lib/sega/x && echo ok')"
say home_hidden "$(nsenter -t "$pid" -m sh -c 'ls -A /home 2>/dev/null | wc -l')"
printf '\377\330\377\340JFIF-test\377\331' >"/data/Sega_1/$(date -u +%F)/a.jpg"
say seen "$(shows '"a.jpg"' list --json)"
say attempted "$(shows 'connection refused' status --json)"
systemctl reload sega-uploader.service
say reload "$?:$(prop ActiveState)/$(prop SubState):$(prop NRestarts):$([ "$(prop MainPID)" = "$pid" ] && echo same-pid)"
systemctl stop sega-uploader.service
say stop "$?:$(prop Result):$(prop ExecMainStatus)"
cp /etc/sega/config.json /tmp/config.json
echo '{ "upload": { "url": 5 } }' >/etc/sega/config.json
systemctl start sega-uploader.service
sleep 8
say bad_config "$(prop ActiveState):$(prop ExecMainStatus):$(prop NRestarts)"
cp /tmp/config.json /etc/sega/config.json
# database.url: the ledger in PostgreSQL, on a server outside the container whose unix
# socket deb-check bind-mounts at /run/sega-pg.
if [ -S /run/sega-pg/.s.PGSQL.5432 ]; then
    cp /etc/sega/config-pg.json /etc/sega/config.json
    systemctl start sega-uploader.service
    for i in $(seq 1 40); do [ "$(prop SubState)" = running ] && break; sleep 0.5; done
    say pg_state "$(prop ActiveState)/$(prop SubState)"
    printf '\377\330\377\340JFIF-test\377\331' >"/data/Sega_1/$(date -u +%F)/b.jpg"
    say pg_seen "$(shows '"b.jpg"' list --json)"
    say pg_attempted "$(shows 'connection refused' status --json)"
    systemctl stop sega-uploader.service
    say pg_stop "$?:$(prop Result):$(prop ExecMainStatus)"
    cp /tmp/config.json /etc/sega/config.json
fi
# The shipped example drop-ins, installed as the README says: an image folder under /home,
# the metrics file in node_exporter's textfile directory, another address allowed.
if [ -f /etc/sega/config-ex.json ]; then
    mkdir -p /etc/systemd/system/sega-uploader.service.d
    cp /usr/share/doc/sega-uploader/examples/*.conf /etc/systemd/system/sega-uploader.service.d/
    cp /etc/sega/config-ex.json /etc/sega/config.json
    systemctl daemon-reload
    systemctl start sega-uploader.service
    for i in $(seq 1 40); do [ "$(prop SubState)" = running ] && break; sleep 0.5; done
    say ex_state "$(prop ActiveState)/$(prop SubState)"
    say ex_allow "$(prop IPAddressAllow)"
    printf '\377\330\377\340JFIF-test\377\331' >"/home/cameras/Sega_4/$(date -u +%F)/c.jpg"
    say ex_seen "$(shows '"c.jpg"' list --json)"
    prom=/var/lib/prometheus/node-exporter/sega-uploader.prom
    for i in $(seq 1 40); do [ -s "$prom" ] && break; sleep 0.5; done
    say ex_metrics "$(grep -c '^sega_build_info{' "$prom" 2>/dev/null)"
    systemctl stop sega-uploader.service
    say ex_stop "$?:$(prop Result):$(prop ExecMainStatus)"
    rm -r /etc/systemd/system/sega-uploader.service.d
    systemctl daemon-reload
    cp /tmp/config.json /etc/sega/config.json
fi
# https: the test endpoint behind a TLS front on this container's loopback, whose CA it
# makes at start (sega-testsrv --tls-dir); the service trusts it through
# upload.tls.ca_file (config-https.json) and sends the content's checksum in a field.
if [ -x /usr/local/bin/sega-testsrv ]; then
    t=/run/https-test
    mkdir -p $t
    sega-testsrv --listen 127.0.0.1:8443 --tls-dir $t --addr-file $t/addr \
        --log $t/requests.jsonl --quiet >$t/out 2>&1 &
    srv=$!
    for i in $(seq 1 40); do [ -s $t/addr ] && break; sleep 0.25; done
    say https_endpoint "$(head -n 1 $t/addr 2>/dev/null)"
    install -m 0644 $t/ca.pem /etc/sega/https-ca.pem
    cp /etc/sega/config-https.json /etc/sega/config.json
    say https_check_config "$(sega-uploader check-config 2>&1 | grep 'TLS 127.0.0.1:8443' | head -n 1)"
    systemctl start sega-uploader.service
    for i in $(seq 1 40); do [ "$(prop SubState)" = running ] && break; sleep 0.5; done
    say https_state "$(prop ActiveState)/$(prop SubState)"
    c="/data/Sega_1/$(date -u +%F)/c.jpg"
    printf '\377\330\377\340JFIF-over-https\377\331' >"$c"
    say https_uploaded "$(shows '"filename":"c.jpg".*"status":"uploaded"' list --json)"
    say https_sha256 "$(sha256sum "$c" | cut -d ' ' -f 1)"
    systemctl stop sega-uploader.service
    say https_stop "$?:$(prop Result):$(prop ExecMainStatus)"
    kill $srv
    cp $t/requests.jsonl /deb-selftest.https.jsonl
    cp $t/out /deb-selftest.https.out
    cp /tmp/config.json /etc/sega/config.json
fi
say unit_warnings "$(journalctl -b --no-pager -o cat | grep 'sega-uploader.service' | grep -ci -e unknown -e ignoring -e invalid)"
journalctl -b -u sega-uploader.service --no-pager -o short-precise >/deb-selftest.journal
say done yes
systemctl poweroff
SELFTEST
chmod 0755 "$B/usr/local/bin/deb-selftest"
cp "$testsrv" "$B/usr/local/bin/sega-testsrv"
python3 - "$B/etc/sega/config.json" "$B/etc/sega/config-https.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
c["upload"]["url"] = "https://127.0.0.1:8443/upload"
c["upload"]["tls"]["ca_file"] = "/etc/sega/https-ca.pem"
c["upload"]["fields"] = {"folder": "{folder}", "date": "{date}", "sha256": "{sha256}"}
json.dump(c, open(sys.argv[2], "w"), indent=2)
PY
chroot "$B" sh -c 'chown root:sega /etc/sega/config-https.json && chmod 0640 /etc/sega/config-https.json'
cat >"$B/etc/systemd/system/deb-selftest.service" <<'UNIT'
[Unit]
Description=deb-check self test
After=sega-uploader.service
[Service]
Type=oneshot
ExecStart=/usr/local/bin/deb-selftest
[Install]
WantedBy=multi-user.target
UNIT
ln -s /etc/systemd/system/deb-selftest.service "$B/etc/systemd/system/multi-user.target.wants/"

# The PostgreSQL server for database.url: a throwaway cluster of this machine's PostgreSQL
# (trust authentication, no TCP listener), its socket directory bind-mounted into the
# container. A role and a database of the service's own; the daemon creates its tables.
PG=$PWD/$WORK/pg
pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
pg_sql() { runuser -u postgres -- "$pg_bin/psql" -h "$PG/sock" -U postgres -X -qAt "$@"; }
pg_stop() {
    [ -f "$PG/data/postmaster.pid" ] || return 0
    runuser -u postgres -- "$pg_bin/pg_ctl" -D "$PG/data" -m immediate -w stop >/dev/null 2>&1 || true
}
trap 'pg_stop; wait 2>/dev/null || true' EXIT
mkdir -p "$PG/sock"
chown postgres: "$PG" "$PG/sock"
chmod 0755 "$PG/sock"
pg_up=no
if quiet "$WORK/pg-setup.log" runuser -u postgres -- "$pg_bin/initdb" -D "$PG/data" -U postgres -A trust \
    --no-sync -E UTF8 --locale=C.UTF-8 &&
    quiet "$WORK/pg-setup.log" runuser -u postgres -- "$pg_bin/pg_ctl" -D "$PG/data" -l "$PG/log" -w -t 30 \
        -o "-k $PG/sock -c listen_addresses= -c fsync=off" start &&
    quiet "$WORK/pg-setup.log" pg_sql -c "CREATE ROLE sega LOGIN" -c "CREATE DATABASE sega OWNER sega"; then
    pg_up=yes
    python3 - "$B/etc/sega/config.json" "$B/etc/sega/config-pg.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
c["database"]["url"] = "host=/run/sega-pg dbname=sega user=sega"
json.dump(c, open(sys.argv[2], "w"), indent=2)
PY
    chroot "$B" sh -c 'chown root:sega /etc/sega/config-pg.json && chmod 0640 /etc/sega/config-pg.json'
else
    bad "a throwaway PostgreSQL server for the container (see $WORK/pg-setup.log)"
fi
# For the example drop-ins: an image folder under /home (hidden by the unit without the
# drop-in) and node_exporter's textfile directory, writable by sega.
mkdir -p "$B/home/cameras/Sega_4/$today" "$B/var/lib/prometheus/node-exporter"
chroot "$B" sh -c 'chgrp -R sega /home/cameras && chmod -R 0750 /home/cameras &&
    chown sega:sega /var/lib/prometheus/node-exporter'
python3 - "$B/etc/sega/config.json" "$B/etc/sega/config-ex.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
c["watch"]["folders"] = ["Sega_1", "/home/cameras/Sega_4"]
c["metrics"]["textfile"] = "/var/lib/prometheus/node-exporter/sega-uploader.prom"
json.dump(c, open(sys.argv[2], "w"), indent=2)
PY
chroot "$B" sh -c 'chown root:sega /etc/sega/config-ex.json && chmod 0640 /etc/sega/config-ex.json'
nspawn_run_existed=no
[ -e /run/systemd/nspawn ] && nspawn_run_existed=yes
# --register=no --keep-unit: this machine has no systemd of its own to register with.
timeout 180 systemd-nspawn -q --register=no --keep-unit --private-network -D "$B" -b \
    --bind="$PG/sock:/run/sega-pg" >"$WORK/boot.log" 2>&1 </dev/null || true
[ "$nspawn_run_existed" = yes ] || rm -rf /run/systemd/nspawn
pg_files=
if [ "$pg_up" = yes ]; then
    pg_files=$(pg_sql -d sega -c "SELECT string_agg(convert_from(filename, 'UTF8'), ' ' ORDER BY filename) FROM files" 2>&1)
    pg_stop
    cp "$PG/log" "$WORK/pg.log" 2>/dev/null || true
fi
cp "$B/deb-selftest.journal" "$WORK/boot-journal.txt" 2>/dev/null || true
cp "$B/deb-selftest.https.jsonl" "$WORK/https-requests.jsonl" 2>/dev/null || true
cp "$B/deb-selftest.https.out" "$WORK/https-testsrv.txt" 2>/dev/null || true
got() { sed -n "s/^$1=//p" "$B/deb-selftest.out" 2>/dev/null | tail -n 1; }
if [ "$(got done)" = yes ]; then
    same "$(got enabled)" enabled "booted: the service is enabled"
    same "$(got state)" active/running "booted: the service started at boot and signalled READY"
    case "$(got status_text)" in
    *"folder(s) watched"*) ok "booted: STATUS= says: $(got status_text)" ;;
    *) bad "booted: STATUS= is '$(got status_text)'" ;;
    esac
    same "$(got uid)" "$(got uid | cut -d/ -f2)/$(got uid | cut -d/ -f2)" "the daemon runs as user sega"
    same "$(got nonewprivs):$(got seccomp):$(got capeff)" "1:2:0000000000000000" \
        "NoNewPrivileges, a seccomp filter and no capabilities on the running daemon"
    same "$(got etc_write):$(got state_write):$(got home_hidden)" "1:ok:0" \
        "its view: /etc read-only, /var/lib/sega writable, /home hidden"
    same "$(got seen):$(got attempted)" "1:1" "a new image is recorded and an upload attempted (connection refused)"
    same "$(got reload)" "0:active/running:0:same-pid" "systemctl reload: same process, still running"
    same "$(got stop)" "0:success:0" "systemctl stop: a clean exit 0"
    same "$(got bad_config)" "failed:78:0" "a broken config: exit 78, no restart loop"
    same "$(got unit_warnings)" 0 "systemd reports no unknown or invalid setting in the unit"
    if [ "$pg_up" = yes ]; then
        same "$(got pg_state)" active/running "database.url (PostgreSQL over a unix socket): the service starts, READY"
        same "$(got pg_seen):$(got pg_attempted)" "1:1" \
            "PostgreSQL ledger: a new image is recorded and an upload attempted (connection refused)"
        same "$(got pg_stop)" "0:success:0" "PostgreSQL ledger: systemctl stop, a clean exit 0"
        same "$pg_files" "a.jpg b.jpg" "the server's files table holds both images (the daemon made its tables)"
    fi
    same "$(got ex_state)" active/running "example drop-ins: the service starts with all three in place"
    case " $(got ex_allow) " in
    *" 192.0.2.10"[/\ ]*) ok "example drop-ins: IPAddressAllow= adds 192.0.2.10 ($(got ex_allow))" ;;
    *) bad "example drop-ins: IPAddressAllow= is '$(got ex_allow)'" ;;
    esac
    same "$(got ex_seen):$(got ex_metrics)" "1:1" \
        "example drop-ins: an image under /home is recorded, the metrics file is written in /var/lib/prometheus/node-exporter"
    same "$(got ex_stop)" "0:success:0" "example drop-ins: systemctl stop, a clean exit 0"
    same "$(got https_endpoint)" "https://127.0.0.1:8443/upload" \
        "https: the test endpoint runs in the container behind its TLS front (see $WORK/https-testsrv.txt)"
    case "$(got https_check_config)" in
    "ok   TLS 127.0.0.1:8443: TLS"*"issuer O=sega-uploader tests, CN=sega-testsrv CA"*)
        ok "https: check-config shakes hands: $(got https_check_config)" ;;
    *) bad "https: check-config's TLS line is '$(got https_check_config)'" ;;
    esac
    same "$(got https_state)" active/running "https: the service starts with upload.tls.ca_file naming a throwaway CA"
    same "$(got https_uploaded)" 1 "https: a new image is uploaded over https (status uploaded)"
    sum=$(got https_sha256)
    arrived=$(grep '"filename":"c.jpg"' "$WORK/https-requests.jsonl" 2>/dev/null | grep '"status":200' | head -n 1)
    if [ -n "$sum" ] && [ "$(printf '%s' "$arrived" | grep -o "$sum" | wc -l)" -ge 2 ]; then
        ok "https: the endpoint received c.jpg whole (SHA-256 ${sum:0:16}…), its {sha256} field equal to it"
    else
        bad "https: no whole c.jpg with a matching {sha256} field at the endpoint (see $WORK/https-requests.jsonl)"
    fi
    same "$(got https_stop)" "0:success:0" "https: systemctl stop, a clean exit 0"
else
    bad "the $BOOT_SUITE container did not run the self test (see $WORK/boot.log)"
    tail -n 30 "$WORK/boot.log"
fi

t1=$(date +%s)
rm -rf "$R" "$v" "$B" "$PG"
echo
echo "package:   $deb ($size bytes; installed $(dpkg-deb -f "$deb" Installed-Size) KiB)"
echo "glibc:     highest symbol GLIBC_$glibc"
echo "libpq:     NEEDED libpq.so.5; $pq_count libpq functions, the newest from libpq5 $pq_need"
echo "security:  $(grep 'Overall exposure' "$WORK/security.txt" | sed 's/^→ //')"
echo "lintian:"
sed 's/^/  /' "$WORK/lintian.txt"
[ -s "$WORK/lintian.txt" ] || echo "  (nothing)"
echo "time:      $((t1 - t0)) s in all (build and tools $((tb - t0)) s, static checks and install/purge $((tp - tb)) s, under systemd $((t1 - tp)) s)"
echo "deb-check: $passed passed, $failed failed"
[ "$failed" = 0 ]
