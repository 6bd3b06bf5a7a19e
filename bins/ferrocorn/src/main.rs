//! ferrocorn: a pre-fork HTTP application server.

fn main() {
    eprintln!(
        "ferrocorn {}: the worker and supervisor are not built yet; nothing to serve.",
        env!("CARGO_PKG_VERSION")
    );
    std::process::exit(1);
}
