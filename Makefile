# The two commands of this repository (see README.md).
.PHONY: test demo build-testenv unit

# Rust builds are cached outside the checkout, shared by the tests and the demo.
export CARGO_TARGET_DIR ?= $(HOME)/.cache/triton/cargo-target

## make test: every test (unit + end-to-end on a real local control plane). Needs root.
test:
	tests/run-all

## make unit: unit tests only (no root, no control plane).
unit:
	cargo test --workspace --exclude triton-e2e

## make build-testenv: build (or find cached) the control plane's Go binaries.
build-testenv:
	tests/cluster/build

## make demo: start the local control plane with Triton and run the tutorial release to Success.
demo:
	tests/cluster/run --triton --quiet -- tests/demo/tutorial.sh
