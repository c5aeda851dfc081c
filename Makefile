# Developer tasks. CI runs `.ci/run`, which runs `fmt-check`, `lint`, `deps` and `test`.
.PHONY: help run test test-store test-deploy lint deps fmt fmt-check fuzz bench chaos docker clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

run: ## run the broker on the embedded default (SQLite in ./fluxgate-data)
	cargo run -p fluxgate-server --bin fluxgate -- serve

test: ## run every test (needs PostgreSQL on 127.0.0.1:5432 and Redis on 127.0.0.1:6379)
	cargo test --workspace

test-store: ## the store's behavioural suite on SQLite and PostgreSQL
	cargo test -p fluxgate-store

test-deploy: ## render deploy/ with kubectl kustomize (offline) and validate every object; the broker loads its ConfigMap
	cargo test -p fluxgate-e2e --test deploy
	cargo test -p fluxgate-server --test deploy_config

lint: ## clippy, warnings are errors
	cargo clippy --workspace --all-targets -- -D warnings

deps: ## unused dependencies (cargo machete) and licences, bans, sources (cargo deny, offline)
	cargo machete
	cargo deny --frozen check licenses bans sources

fmt: ## format the code
	cargo fmt --all

fmt-check: ## check the formatting
	cargo fmt --all -- --check

fuzz: ## fuzz the GitLab hook parser for a minute (needs nightly and cargo-fuzz)
	cd crates/gitlab/fuzz && cargo +nightly fuzz run parse_hook -- -max_total_time=60 -dict=parse_hook.dict

bench: ## run the benchmarks (release build), see docs/benchmarks.md
	cargo run --release -p fluxgate-bench -- all

# Flags for the fault run, e.g. `make chaos CHAOS_ARGS="--duration 300 --kills 5"`.
CHAOS_ARGS ?=

chaos: ## fault run: kills, outages, floods under load; fails if an acknowledged hook is lost (about 4 min, see docs/reliability.md)
	RUST_LIB_BACKTRACE=0 cargo run --release -p fluxgate-bench -- chaos $(CHAOS_ARGS)

clean: ## remove build output and the embedded database
	cargo clean
	rm -rf fluxgate-data
