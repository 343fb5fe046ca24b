# The Debian package (DESIGN §9), included by the Makefile. The work is in scripts/deb-*.sh;
# tool versions are pinned in scripts/deb-tools.sh.

.PHONY: deb deb-check

## target/debian/sega-uploader_<version>_amd64.deb: a glibc 2.27 build (cargo-zigbuild) with the
## postgres feature (libpq.so.5 linked dynamically; Depends: libpq5), cargo-deb.
deb:
	scripts/deb-build.sh

## Build the .deb; lint it; check glibc, Depends, xz, the unit's security score; install,
## upgrade and purge it in a throwaway Debian 11 root (purge keeps the sega user and the
## admin's drop-ins); run the unit under systemd in a Debian 12 container, with SQLite, then
## with a throwaway PostgreSQL server's socket, then with the shipped example drop-ins, then
## uploading over https to the test endpoint behind a TLS front with a throwaway CA.
## As root; installs the tools it needs; logs in target/deb-check/.
deb-check:
	scripts/deb-check.sh
