//! With the `wsgi` feature the binary links libpython: give it an rpath to
//! the library's directory (told by ferrocorn-wsgi's build script) so that
//! it runs without LD_LIBRARY_PATH.

fn main() {
    if std::env::var_os("CARGO_FEATURE_WSGI").is_some()
        && let Ok(dir) = std::env::var("DEP_FERROCORN_PYTHON_LIBDIR")
        && !dir.is_empty()
    {
        println!("cargo:rustc-link-arg-bins=-Wl,-rpath,{dir}");
    }
}
