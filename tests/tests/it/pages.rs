//! The server serves the built page: `/`, `/r/{room}`, and the assets, the
//! wasm as `application/wasm`, gzipped for browsers that ask.

use tests::browser::serve_page;
use tests::http::{Response, get, get_with};

/// Checks that `response` is `status` with a header `name` whose value
/// starts with `value`.
#[track_caller]
fn check(response: &Response, status: u16, name: &str, value: &str) {
    assert_eq!(response.status, status, "{response:?}");
    let found = response.header(name);
    assert!(
        found.is_some_and(|found| found.starts_with(value)),
        "{name}: {found:?} in {response:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_page_and_its_assets_are_served() {
    let server = serve_page().await.unwrap();
    for path in ["/", "/r/some-room"] {
        let page = get(&server.http_url(path)).await.unwrap();
        check(&page, 200, "content-type", "text/html");
        check(&page, 200, "cache-control", "no-cache");
    }
    // A room that can never be joined: 404, but the page (which explains).
    let page = get(&server.http_url("/r/not%20a%20room")).await.unwrap();
    check(&page, 404, "content-type", "text/html");

    let dist = tests::browser::dist_dir().unwrap();
    let wasm = std::fs::read_dir(&dist)
        .unwrap()
        .filter_map(Result::ok)
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .find(|name| name.ends_with(".wasm"))
        .expect("a .wasm file in dist/");
    let on_disk = std::fs::read(dist.join(&wasm)).unwrap();
    let url = server.http_url(&format!("/{wasm}"));
    let plain = get(&url).await.unwrap();
    check(&plain, 200, "content-type", "application/wasm");
    assert!(plain.header("content-encoding").is_none(), "{plain:?}");
    assert!(plain.body == on_disk, "the served wasm differs from {wasm} in dist/");
    // The body as it came over the wire, not decompressed.
    let zipped = get_with(&url, &[("accept-encoding", "gzip")]).await.unwrap();
    check(&zipped, 200, "content-encoding", "gzip");
    check(&zipped, 200, "content-type", "application/wasm");
    let (size, wire) = (on_disk.len(), zipped.body.len());
    assert!(wire < size * 2 / 3, "gzipped {wire} of {size} bytes");
    println!("wasm {wasm}: {size} bytes, {wire} gzipped on the wire");
}
