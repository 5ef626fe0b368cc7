//! What `build` adds to the page trunk wrote in `dist/`: the PNG icons,
//! rendered from `icon.svg` (resvg), and a Brotli and a gzip copy of every
//! file that compresses, so the server sends a file as it is and never
//! compresses per request (a gzip per wasm fetch took 14 ms of CPU).

use std::{
    fs,
    io::Write,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, bail};

/// The PNG icons the manifest and `apple-touch-icon` name: size in pixels
/// and file name, each rendered from `icon.svg`.
const ICONS: &[(u32, &str)] = &[(192, "icon-192.png"), (512, "icon-512.png")];

/// Extensions of the files worth compressing (PNGs already are).
const COMPRESSIBLE: &[&str] = &["html", "js", "wasm", "css", "svg", "webmanifest", "json"];

/// Renders [`ICONS`] from `dist/icon.svg` (which trunk copied there).
pub fn icons(dist: &Path) -> Result<()> {
    let source = dist.join("icon.svg");
    let svg = fs::read(&source).with_context(|| format!("could not read {}", source.display()))?;
    let tree = resvg::usvg::Tree::from_data(&svg, &resvg::usvg::Options::default())
        .with_context(|| format!("{} is not an SVG resvg can read", source.display()))?;
    for &(size, name) in ICONS {
        let mut pixmap = resvg::tiny_skia::Pixmap::new(size, size)
            .with_context(|| format!("cannot make a {size}×{size} image"))?;
        // Pixel sizes are small whole numbers, exact in f32.
        let scale = size as f32 / tree.size().width().max(tree.size().height());
        resvg::render(
            &tree,
            resvg::tiny_skia::Transform::from_scale(scale, scale),
            &mut pixmap.as_mut(),
        );
        let path = dist.join(name);
        pixmap.save_png(&path).with_context(|| format!("could not write {}", path.display()))?;
        println!("icon: {name} ({size}×{size})");
    }
    Ok(())
}

/// One compressed file's sizes, in bytes.
struct Sizes {
    name: String,
    plain: u64,
    brotli: u64,
    gzip: u64,
}

/// Writes `NAME.br` and `NAME.gz` beside every compressible file under
/// `dist` (best levels: it happens once a build), removing stale ones, and
/// prints the sizes.
pub fn precompress(dist: &Path) -> Result<()> {
    let mut files = Vec::new();
    walk(dist, &mut files)?;
    // A compressed copy whose original is gone (an earlier build's hashed
    // name) would be served for a file that no longer exists.
    for file in &files {
        let stale = matches!(extension(file), "br" | "gz") && !file.with_extension("").is_file();
        if stale {
            fs::remove_file(file)
                .with_context(|| format!("could not remove {}", file.display()))?;
        }
    }
    let mut table = Vec::new();
    for file in files.iter().filter(|f| COMPRESSIBLE.contains(&extension(f))) {
        let data = fs::read(file).with_context(|| format!("could not read {}", file.display()))?;
        let brotli = brotli_bytes(&data).with_context(|| format!("brotli {}", file.display()))?;
        let gzip = gzip_bytes(&data).with_context(|| format!("gzip {}", file.display()))?;
        for (bytes, suffix) in [(&brotli, "br"), (&gzip, "gz")] {
            let mut name = file.clone().into_os_string();
            name.push(format!(".{suffix}"));
            let path = PathBuf::from(name);
            fs::write(&path, bytes)
                .with_context(|| format!("could not write {}", path.display()))?;
        }
        let name = file.strip_prefix(dist).unwrap_or(file).display().to_string();
        table.push(Sizes {
            name,
            plain: data.len() as u64,
            brotli: brotli.len() as u64,
            gzip: gzip.len() as u64,
        });
    }
    if table.is_empty() {
        bail!("{} has nothing to compress: did trunk build it?", dist.display());
    }
    println!("{:<44} {:>9} {:>9} {:>9}", "file", "bytes", "brotli", "gzip");
    for row in &table {
        println!("{:<44} {:>9} {:>9} {:>9}", row.name, row.plain, row.brotli, row.gzip);
    }
    let total = |f: fn(&Sizes) -> u64| table.iter().map(f).sum::<u64>();
    println!(
        "{:<44} {:>9} {:>9} {:>9}",
        "total",
        total(|s| s.plain),
        total(|s| s.brotli),
        total(|s| s.gzip)
    );
    Ok(())
}

fn brotli_bytes(data: &[u8]) -> Result<Vec<u8>> {
    let params = brotli::enc::BrotliEncoderParams { quality: 11, lgwin: 22, ..Default::default() };
    let mut out = Vec::new();
    brotli::BrotliCompress(&mut &data[..], &mut out, &params)?;
    Ok(out)
}

fn gzip_bytes(data: &[u8]) -> Result<Vec<u8>> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(data)?;
    Ok(encoder.finish()?)
}

fn extension(path: &Path) -> &str {
    path.extension().and_then(|e| e.to_str()).unwrap_or_default()
}

/// Every file under `dir`, depth first.
fn walk(dir: &Path, files: &mut Vec<PathBuf>) -> Result<()> {
    for entry in fs::read_dir(dir).with_context(|| format!("could not list {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            walk(&path, files)?;
        } else {
            files.push(path);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compressed_copies_decompress_to_the_original() {
        let data = b"heartsync heartsync heartsync \xe2\x99\xa5".repeat(200);
        let brotli = brotli_bytes(&data).unwrap();
        let gzip = gzip_bytes(&data).unwrap();
        assert!(brotli.len() < data.len() / 10 && gzip.len() < data.len() / 10);
        let mut unbrotli = Vec::new();
        brotli::BrotliDecompress(&mut &brotli[..], &mut unbrotli).unwrap();
        assert_eq!(unbrotli, data);
        let mut ungzip = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&gzip[..]), &mut ungzip)
            .unwrap();
        assert_eq!(ungzip, data);
    }

    #[test]
    fn precompress_writes_copies_and_drops_stale_ones() {
        let dir = std::env::temp_dir().join(format!("xtask-dist-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("snippets")).unwrap();
        fs::write(dir.join("index.html"), "<p>hi</p>".repeat(50)).unwrap();
        fs::write(dir.join("snippets/a.js"), "let a = 1;".repeat(50)).unwrap();
        fs::write(dir.join("icon.png"), [0u8; 64]).unwrap();
        fs::write(dir.join("old-0123456789abcdef.js.br"), b"stale").unwrap();
        precompress(&dir).unwrap();
        for made in ["index.html.br", "index.html.gz", "snippets/a.js.br", "snippets/a.js.gz"] {
            assert!(dir.join(made).is_file(), "{made}");
        }
        assert!(!dir.join("icon.png.br").exists());
        assert!(!dir.join("old-0123456789abcdef.js.br").exists());
        let _ = fs::remove_dir_all(&dir);
    }
}
