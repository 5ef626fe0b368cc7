//! The server serves the built page: `/`, `/r/{room}`, and the assets, the
//! wasm as `application/wasm`, gzipped for browsers that ask.

use std::net::SocketAddr;
use tests::browser::serve_page;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A raw GET: the response head (lowercased) and the body's length.
async fn get(addr: SocketAddr, path: &str, gzip: bool) -> (String, usize) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let encoding = if gzip { "Accept-Encoding: gzip\r\n" } else { "" };
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{encoding}Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let end = response.windows(4).position(|w| w == b"\r\n\r\n").expect("end of head");
    let head = String::from_utf8_lossy(&response[..end]).to_ascii_lowercase();
    (head, response.len() - end - 4)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_page_and_its_assets_are_served() {
    let server = serve_page().await.unwrap();
    for path in ["/", "/r/some-room"] {
        let (head, _) = get(server.addr, path, false).await;
        assert!(head.starts_with("http/1.1 200"), "{path}: {head}");
        assert!(head.contains("content-type: text/html"), "{path}: {head}");
        assert!(head.contains("cache-control: no-cache"), "{path}: {head}");
    }
    // A room that can never be joined: 404, but the page (which explains).
    let (head, _) = get(server.addr, "/r/not%20a%20room", false).await;
    assert!(head.starts_with("http/1.1 404"), "{head}");
    assert!(head.contains("content-type: text/html"), "{head}");

    let dist = tests::browser::dist_dir().unwrap();
    let wasm = std::fs::read_dir(&dist)
        .unwrap()
        .filter_map(Result::ok)
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .find(|name| name.ends_with(".wasm"))
        .expect("a .wasm file in dist/");
    let size = std::fs::metadata(dist.join(&wasm)).unwrap().len() as usize;
    let (head, plain) = get(server.addr, &format!("/{wasm}"), false).await;
    assert!(head.contains("content-type: application/wasm"), "{head}");
    assert_eq!(plain, size);
    let (head, zipped) = get(server.addr, &format!("/{wasm}"), true).await;
    assert!(head.contains("content-encoding: gzip"), "{head}");
    assert!(zipped < size * 2 / 3, "gzipped {zipped} of {size} bytes");
    println!("wasm {wasm}: {size} bytes, {zipped} gzipped on the wire");
}
