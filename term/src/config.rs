//! The command line: which server and room to join, as whom, and how to
//! draw. Parsing and checking are pure, so mistakes are reported before
//! anything touches the terminal or the network.

use clap::Parser;
use shared::client::address;
use shared::{ClientId, RoomName};

/// A heart in a heartsync room, beating in your terminal.
///
/// Your heart beats at 72 bpm and is pulled into step with everyone else in
/// the room. Press space to send love, q to quit.
#[derive(Debug, Clone, Parser)]
#[command(name = "heartsync-term", version)]
pub struct Args {
    /// The heartsync server, as a WebSocket URL (ws:// only).
    #[arg(long, default_value = "ws://127.0.0.1:8080", value_parser = parse_server_url)]
    pub url: String,

    /// The room to join: 1-64 of A-Z, a-z, 0-9, '_' and '-'.
    #[arg(long, default_value = "main", value_parser = RoomName::parse)]
    pub room: RoomName,

    /// Who this heart is to the server (8-64 of A-Z, a-z, 0-9, '_' and
    /// '-'); a fresh random one by default. Love is counted per id: an id
    /// reused from an earlier session takes up its count where the server
    /// has it.
    #[arg(long, value_parser = ClientId::parse)]
    pub client_id: Option<ClientId>,

    /// Print one still heart and exit, without a server.
    #[arg(long = "static")]
    pub still: bool,

    /// Frames drawn per second.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=120))]
    pub fps: u32,
}

/// Checks that `url` is a plain `ws://` URL (this build has no TLS) and
/// drops any trailing slash, so that [`address::socket_url`] can append the
/// room's path.
pub fn parse_server_url(url: &str) -> Result<String, String> {
    let url = url.trim().trim_end_matches('/');
    if url.starts_with("wss://") {
        return Err(String::from(
            "wss:// needs TLS, which heartsync-term does not include; use ws:// \
             (for example behind an SSH tunnel)",
        ));
    }
    match url.strip_prefix("ws://") {
        Some(rest) if !rest.is_empty() => Ok(url.to_owned()),
        _ => Err(format!("the server URL must look like ws://host:port, got {url:?}")),
    }
}

/// A fresh client id, drawn as the page draws one.
pub fn random_client_id() -> ClientId {
    address::new_client_id(&mut rand::random::<f64>)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_urls_are_checked() {
        assert_eq!(parse_server_url("ws://127.0.0.1:8080/").unwrap(), "ws://127.0.0.1:8080");
        assert_eq!(parse_server_url(" ws://h ").unwrap(), "ws://h");
        assert!(parse_server_url("wss://example.com").unwrap_err().contains("TLS"));
        assert!(parse_server_url("http://example.com").is_err());
        assert!(parse_server_url("ws://").is_err());
    }

    #[test]
    fn random_ids_differ() {
        let (a, b) = (random_client_id(), random_client_id());
        assert_ne!(a, b, "two draws of 62^16");
    }

    #[test]
    fn flags_parse() {
        let args = Args::try_parse_from(["heartsync-term"]).unwrap();
        assert_eq!(
            (args.url.as_str(), args.room.as_str(), args.fps),
            ("ws://127.0.0.1:8080", "main", 30)
        );
        assert!(!args.still && args.client_id.is_none());
        let args = Args::try_parse_from([
            "heartsync-term",
            "--url",
            "ws://h:9/",
            "--room",
            "r1",
            "--client-id",
            "abcdefgh",
            "--static",
            "--fps",
            "60",
        ])
        .unwrap();
        assert_eq!(args.url, "ws://h:9");
        assert!(args.still && args.fps == 60);
        assert!(Args::try_parse_from(["heartsync-term", "--room", "a b"]).is_err());
        assert!(Args::try_parse_from(["heartsync-term", "--client-id", "short"]).is_err());
        assert!(Args::try_parse_from(["heartsync-term", "--fps", "0"]).is_err());
    }
}
