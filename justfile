# ferrocorn's everyday commands. A convenience: README and .ci/run do not need just.

# Serve the built-in app on 127.0.0.1:8000, metrics on 8001.
run *ARGS:
    cargo run --release -- {{ARGS}}

# Every test, as CI runs them (installs promtool and a Python venv if missing).
test:
    ./scripts/test

# Formatting, clippy and docs with warnings denied.
lint:
    cargo fmt --all --check
    cargo clippy --workspace --all-targets --all-features -- -D warnings
    RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --all-features

# Load benchmark against nginx, hyper and gunicorn on loopback (needs wrk,
# nginx-light and .venv-bench; it says how to get them), written to
# benches/RESULTS.md. `just bench --quick` tries the harness. Micro benchmarks
# (criterion) of every crate: `cargo bench --workspace`.
bench *ARGS:
    cargo build --release -p ferrocorn -p ferrocorn-benches
    cargo run --release -p ferrocorn-benches --bin loadbench -- {{ARGS}}

# One WSGI app (hello, Django, 50 ms sleep, 1 MiB stream and upload) on
# ferrocorn, granian and gunicorn in the same run (needs wrk and
# .venv-wsgibench; it says how to get them), written to benches/RESULTS-wsgi.md.
bench-wsgi *ARGS:
    cargo build --release -p ferrocorn -p ferrocorn-benches
    cargo run --release -p ferrocorn-benches --bin wsgibench -- {{ARGS}}

# End-to-end tests of the built binary (testing the ferrocorn package builds it first).
e2e:
    cargo test -p ferrocorn -p ferrocorn-tests

# Mutation testing of the parser, the metrics fold and the heartbeat checks
# (needs `cargo install --locked cargo-mutants`; about an hour on two busy cores):
# `just mutants`, `just mutants parse`, `just mutants aggregate --in-diff d.diff`.
# Missed mutants must be listed as equivalent in the crate's tests/MUTANTS.md.
mutants *ARGS:
    ./scripts/mutants {{ARGS}}

# What CI runs.
ci:
    ./.ci/run
