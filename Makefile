# sega-uploader — the commands a newcomer needs. See README.md.
CARGO ?= cargo

.PHONY: all build release test lint demo clean

all: build

build:
	$(CARGO) build --workspace --bins

release:
	$(CARGO) build --release -p sega-uploader

## The whole job end to end on a demo tree, with a loopback stand-in for the endpoint.
demo: build
	scripts/demo.sh

## Unit and integration tests (the real binary, real inotify, a real HTTP server on 127.0.0.1).
test:
	$(CARGO) test --workspace

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

clean:
	$(CARGO) clean
	rm -rf target/demo
include mk/bench.mk
include mk/deb.mk
include mk/soak.mk
