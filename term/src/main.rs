//! `heartsync-term`: flags in, then either one still heart on stdout
//! (`--static`) or a live heart in a room until the person quits.

use clap::Parser;
use std::io::Write;
use term::config::Args;
use term::paint::{self, Palette};

/// How wide the `--static` heart is, in columns.
const STILL_WIDTH: usize = 40;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.still {
        let heart = paint::still(STILL_WIDTH, Palette::detect());
        // A reader that stops early (`| head`) is not an error.
        return match std::io::stdout().lock().write_all(heart.as_bytes()) {
            Err(error) if error.kind() != std::io::ErrorKind::BrokenPipe => Err(error.into()),
            _ => Ok(()),
        };
    }
    term::screen::run(args).await
}
