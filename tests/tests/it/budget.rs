//! The page's weight: everything it loads (the page, its JavaScript and
//! wasm, and the manifest and icons its head names) fits in [`BUDGET`] on the
//! wire, and the server sends the copies compressed at build time as they
//! are, never compressing per request, with hashed assets cached for good.
//!
//! These read the built page (`cargo xtask build` makes dist/).

use std::{
    fs,
    io::Write,
    net::SocketAddr,
    path::{Path, PathBuf},
};

use tests::browser::{dist_dir, serve_page};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The most the page may weigh on the wire, Brotli-compressed, with the
/// sound, the two languages and the QR code included.
const BUDGET: u64 = 150 * 1024;

/// Extensions the build compresses; the rest (PNGs) are sent as they are.
const COMPRESSIBLE: &[&str] = &["html", "js", "wasm", "css", "svg", "webmanifest", "json"];

/// The files of dist/ the page loads: `index.html` and every file it names.
/// (The manifest's PNG icons are fetched only to install the page.)
fn loaded_files(dist: &Path) -> Vec<PathBuf> {
    let index = fs::read_to_string(dist.join("index.html")).expect("dist/index.html");
    let mut files = vec![dist.join("index.html")];
    for entry in fs::read_dir(dist).expect("dist/ lists").filter_map(Result::ok) {
        let name = entry.file_name().to_string_lossy().into_owned();
        let named = format!("/{name}");
        let is_copy = name.ends_with(".br") || name.ends_with(".gz");
        if !is_copy && name != "index.html" && index.contains(&named) {
            files.push(entry.path());
        }
    }
    files
}

fn extension(path: &Path) -> &str {
    path.extension().and_then(|e| e.to_str()).unwrap_or_default()
}

/// What `file` costs on the wire: its Brotli copy's size, or its own for
/// files that are not compressed. A compressible file without its copy
/// fails the test: it would be sent whole.
fn wire_size(file: &Path) -> u64 {
    if !COMPRESSIBLE.contains(&extension(file)) {
        return fs::metadata(file).expect("a file of dist/").len();
    }
    let mut brotli = file.as_os_str().to_owned();
    brotli.push(".br");
    fs::metadata(&brotli)
        .unwrap_or_else(|_| {
            panic!(
                "{} has no Brotli copy: build dist/ with `cargo xtask build`, which compresses it",
                file.display()
            )
        })
        .len()
}

#[test]
fn the_whole_page_fits_its_budget_on_the_wire() {
    let dist = dist_dir().expect("the built page");
    let files = loaded_files(&dist);
    for kind in ["js", "wasm", "webmanifest", "svg"] {
        assert!(
            files.iter().any(|file| extension(file) == kind),
            "the page loads no .{kind} file; it names {files:?}"
        );
    }
    let mut total = 0;
    let mut lines = Vec::new();
    for file in &files {
        let size = wire_size(file);
        total += size;
        let name = file.file_name().unwrap_or_default().to_string_lossy();
        lines.push(format!("  {name}: {size} bytes"));
    }
    // Past the harness's capture, so every run (CI's log included) shows it.
    let _ = writeln!(
        std::io::stderr(),
        "budget: the page is {:.1} KiB on the wire (Brotli), of {} KiB\n{}",
        total as f64 / 1024.0,
        BUDGET / 1024,
        lines.join("\n")
    );
    assert!(
        total <= BUDGET,
        "the page weighs {total} bytes on the wire, over its budget of {BUDGET}:\n{}",
        lines.join("\n")
    );
}

/// A raw GET with `accept` as `Accept-Encoding` (none when empty): the
/// response head (lowercased) and the body.
async fn get(addr: SocketAddr, path: &str, accept: &str) -> (String, Vec<u8>) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let encoding =
        if accept.is_empty() { String::new() } else { format!("Accept-Encoding: {accept}\r\n") };
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{encoding}Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.expect("read");
    let end = response.windows(4).position(|w| w == b"\r\n\r\n").expect("end of head");
    let head = String::from_utf8_lossy(&response[..end]).to_ascii_lowercase();
    (head, response[end + 4..].to_vec())
}

#[tokio::test(flavor = "multi_thread")]
async fn assets_are_sent_as_compressed_at_build_time() {
    let server = serve_page().await.expect("a server with the page");
    let dist = dist_dir().expect("the built page");
    let files = loaded_files(&dist);
    let compressible = files.iter().filter(|file| COMPRESSIBLE.contains(&extension(file)));
    for file in compressible {
        let name = file.file_name().unwrap_or_default().to_string_lossy().into_owned();
        let path = if name == "index.html" { String::from("/") } else { format!("/{name}") };
        let read = |suffix: &str| {
            let mut copy = file.as_os_str().to_owned();
            copy.push(suffix);
            fs::read(&copy).unwrap_or_else(|_| panic!("{} has no {suffix} copy", file.display()))
        };
        // The very bytes of the build's copies: nothing is compressed per
        // request.
        let (head, body) = get(server.addr, &path, "gzip, deflate, br").await;
        assert!(head.starts_with("http/1.1 200"), "{path}: {head}");
        assert!(head.contains("content-encoding: br"), "{path}: {head}");
        // A cache in between keeps one copy per encoding.
        assert!(head.contains("vary: accept-encoding"), "{path}: {head}");
        assert_eq!(body, read(".br"), "{path}: the body is not dist/{name}.br");
        let (head, body) = get(server.addr, &path, "gzip").await;
        assert!(head.contains("content-encoding: gzip"), "{path}: {head}");
        assert_eq!(body, read(".gz"), "{path}: the body is not dist/{name}.gz");
        let (head, body) = get(server.addr, &path, "").await;
        assert!(!head.contains("content-encoding"), "{path}: {head}");
        assert_eq!(body, fs::read(file).expect("the file"), "{path}: not dist/{name}");

        let hashed = name.starts_with("frontend-") && matches!(extension(file), "js" | "wasm");
        let cache = head.lines().find(|line| line.starts_with("cache-control:")).unwrap_or("");
        if hashed {
            assert!(
                cache.contains("immutable") && cache.contains("max-age=31536000"),
                "{path}: {head}"
            );
        } else {
            assert!(cache.contains("no-cache"), "{path}: {head}");
        }
    }
    // The manifest is JSON a browser takes as a manifest.
    let (head, _) = get(server.addr, "/manifest.webmanifest", "").await;
    assert!(head.contains("content-type: application/manifest+json"), "{head}");
    let (head, _) = get(server.addr, "/icon-192.png", "br").await;
    assert!(head.contains("content-type: image/png"), "{head}");
    assert!(!head.contains("content-encoding"), "{head}");
    server.shutdown().await.expect("shutdown");
}
