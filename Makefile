# The two commands of this repository (see README.md).
.PHONY: test demo build-testenv unit chaos bench-scale

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

## make chaos: the chaos test at scale: 20 sets of 7 releases (140) while components are killed
## in 8 rounds (make test runs 1 set, 5 rounds). CHAOS_SETS, CHAOS_ROUNDS and CHAOS_SEED override.
chaos:
	CHAOS_SETS=$${CHAOS_SETS:-20} CHAOS_ROUNDS=$${CHAOS_ROUNDS:-8} tests/cluster/run --triton --nodes 3 --node-pods 1000 -- \
	  cargo test --offline -p triton-e2e --test chaos -- --ignored --nocapture

## make bench-scale: the controller's scale table (100, 300 and 1,000 releases at once), then
## 60 s of steady state. Release builds; about 15 minutes.
bench-scale:
	TRITON_BUILD_PROFILE=release tests/cluster/run --triton --nodes 5 --node-pods 1000 -- \
	  cargo run --release --offline -p triton-e2e --bin bench-controller -- --scale 100,300,1000 --steady-seconds 60
