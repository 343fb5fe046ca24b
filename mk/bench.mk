# make bench / make bench-smoke: sega-uploader's speed and footprint against curl on a
# loopback endpoint (see BENCHMARKS.md). Not tests: they fail only when a scenario could not
# run (an upload missing or wrong, the daemon not starting), never because of a number.

.PHONY: bench bench-smoke

# The daemon is built as shipped, with the `postgres` feature: the `shared` scenario runs it
# against PostgreSQL (throwaway clusters it starts itself; needs root and the postgresql
# package, else it is skipped, or fails under CI=true). sega-bench itself needs no libpq.
BENCH_FEATURES ?= --features sega-uploader/postgres

## The full run: release binaries, every row of BENCHMARKS.md, median of 3 runs each
## (9 minutes on 2 cores once built, 12-13 from clean; the shared-ledger rows add 4-5).
## Writes bench/results.json and target/bench/table.md.
## Extra flags: make bench BENCH_ARGS='--only latency,present --runs 5'
bench:
	$(CARGO) build --release -p sega-uploader -p sega-bench $(BENCH_FEATURES)
	target/release/sega-bench --daemon target/release/sega-uploader --work target/bench \
	    --out bench/results.json --table target/bench/table.md $(BENCH_ARGS)

## The CI run: every scenario at a tiny size with debug binaries, in seconds.
bench-smoke:
	$(CARGO) build -p sega-uploader -p sega-bench $(BENCH_FEATURES)
	target/debug/sega-bench --smoke --daemon target/debug/sega-uploader --work target/bench-smoke \
	    $(BENCH_ARGS)
