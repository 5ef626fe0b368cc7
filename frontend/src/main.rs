//! Mounts the page; everything else lives in the library.

#[cfg(target_arch = "wasm32")]
fn main() {
    console_error_panic_hook::set_once();
    leptos::mount::mount_to_body(frontend::App);
}

/// The page only runs in a browser; on the host this binary does nothing,
/// so `cargo test` and `cargo clippy` work on the whole workspace.
#[cfg(not(target_arch = "wasm32"))]
fn main() {}
