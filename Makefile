# sega-uploader — the commands a newcomer needs. See README.md.
CARGO ?= cargo

.PHONY: all build release test test-deps lint demo clean

all: build

build:
	$(CARGO) build --workspace --bins

release:
	$(CARGO) build --release -p sega-uploader

## The whole job end to end on a demo tree, with a loopback stand-in for the endpoint.
demo: build
	scripts/demo.sh

# The tests cover both ledgers: SQLite and PostgreSQL (the `postgres` feature, which links
# libpq; the PostgreSQL tests start throwaway servers of their own).
FEATURES ?= --features sega-uploader/postgres

## Unit and integration tests (the real binary, real inotify, a real HTTP server on 127.0.0.1,
## real PostgreSQL servers in temp dirs).
# Most tests spend their time waiting on the daemon (its timers, the endpoint's delays),
# not on the CPU: four at a time keep two cores busy and the suite near half its serial time.
TEST_THREADS ?= 4

test: test-deps
	$(CARGO) test --workspace $(FEATURES) -- --test-threads=$(TEST_THREADS)

# What the PostgreSQL half needs that cargo cannot fetch (libpq-dev, postgresql): installed
# with apt-get when run as root, else the command to run is printed.
test-deps:
	@scripts/test-deps.sh

lint: test-deps
	@# Paths and names in messages go through layout::Show (`.shown()`): Path::display
	@# would let a newline in a file name write a log line of its own.
	@if grep -rn --include='*.rs' '\.display()' src/; then \
	    echo "lint: use .shown() (layout::Show) for paths in messages, not .display()"; exit 1; fi
	@# The upload workers and the watcher never touch the ledger: what they share with it
	@# lives in work.rs and identity.rs, and the owner maps between them.
	@if grep -rn --include='*.rs' 'crate::store' src/upload* src/watch*; then \
	    echo "lint: upload and watch import nothing from store (the ledger); see src/work.rs"; exit 1; fi
	@# The watcher talks to the owner only, never to the upload workers (docs/ARCHITECTURE.md).
	@if grep -rn --include='*.rs' 'crate::upload' src/watch*; then \
	    echo "lint: watch imports nothing from upload: it tells the owner, the owner hands out jobs"; exit 1; fi
	@# No import cycles between the modules of src/ (STYLE.md, "No cycles").
	@scripts/modgraph.sh >/dev/null
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets $(FEATURES) -- -D warnings
	$(CARGO) clippy --workspace --all-targets -- -D warnings

clean:
	$(CARGO) clean
	rm -rf target/demo
include mk/bench.mk
include mk/deb.mk
include mk/soak.mk
