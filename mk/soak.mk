# make soak: the model engine (sega_testsrv::soak, the same one tests/model.rs runs for a
# minute in `make test`) for a long time: sega-uploader against every fault kind mixed at
# random while files keep arriving, in episodes of up to 10 minutes (every other one on a
# throwaway PostgreSQL cluster when its server binaries are installed); each episode ends
# with the oracle's checks (lost, wrong or several Idempotency-Keys, files opened outside
# the tree, secrets printed, uploads of a removed folder, prunes by a stepped clock) and the
# run with a one-line verdict. Exits non-zero if a check failed. Documented in
# docs/RELIABILITY.md; not run by CI. Loopback only; writes under a temp dir.
#
#   make soak                          # 60 minutes, a random seed (printed first)
#   make soak SOAK_MINUTES=10
#   make soak SOAK_FAULTS=all          # also the deleted-WAL fault (off by default)
#   make soak SOAK_ARGS='--seed 42 --rate 50 --workers 8 --keep'

SOAK_MINUTES ?= 60
SOAK_FAULTS ?= default
SOAK_ARGS ?=
# PostgreSQL episodes when the server binaries are there (`make test-deps` installs them).
SOAK_POSTGRES := $(if $(wildcard /usr/lib/postgresql/*/bin/initdb),--postgres,)

.PHONY: soak

soak:
	$(CARGO) build --release -p sega-uploader -p sega-testsrv $(FEATURES)
	target/release/sega-soak --daemon target/release/sega-uploader --minutes $(SOAK_MINUTES) \
	    --faults $(SOAK_FAULTS) $(SOAK_POSTGRES) $(SOAK_ARGS)
