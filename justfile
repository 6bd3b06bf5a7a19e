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

# Micro benchmarks (criterion) of every crate.
bench:
    cargo bench --workspace

# End-to-end tests of the built binary only.
e2e:
    cargo test -p ferrocorn-tests

# What CI runs.
ci:
    ./.ci/run
