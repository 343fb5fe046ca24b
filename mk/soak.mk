# make soak: sega-uploader against the fault suite's faults mixed at random for a long time
# (an hour by default) while files keep arriving; ends with a lost / duplicated / max-RSS
# summary and exits non-zero if a file was lost or a duplicate carried two Idempotency-Keys.
# Documented in docs/RELIABILITY.md; not run by CI. Loopback only; writes under a temp dir.
#
#   make soak                          # 60 minutes, a random seed (printed first)
#   make soak SOAK_MINUTES=10
#   make soak SOAK_ARGS='--seed 42 --rate 50 --workers 8 --keep'

SOAK_MINUTES ?= 60
SOAK_ARGS ?=

.PHONY: soak

soak:
	$(CARGO) build --release -p sega-uploader -p sega-testsrv
	target/release/sega-soak --daemon target/release/sega-uploader --minutes $(SOAK_MINUTES) $(SOAK_ARGS)
