//! Link the interpreter PyO3 found (PYO3_PYTHON, else `python3` on PATH)
//! with an rpath to its library directory, so that the crate's own tests
//! and examples run without LD_LIBRARY_PATH; record its version; tell a
//! dependent binary's build script the directory (`links`), for its rpath.

fn main() {
    pyo3_build_config::add_libpython_rpath_link_args();
    let config = pyo3_build_config::get();
    let version = config.version();
    println!(
        "cargo:rustc-env=FERROCORN_WSGI_PYTHON_VERSION={}.{}",
        version.major, version.minor
    );
    if let Some(dir) = config.lib_dir() {
        println!("cargo:libdir={dir}");
    }
}
