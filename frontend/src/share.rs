//! Sharing a room: its link, and that link as a QR code drawn as SVG in
//! the page (the `qrcode` crate, rendered here in the browser), so a phone
//! can join a room from a laptop's screen in one scan. The Web Share API or
//! the clipboard (browser-only) are in the `share` functions of `ui`; what
//! is here is pure and tested natively.

use qrcode::render::svg;
use qrcode::{EcLevel, QrCode};
use shared::RoomName;

/// The link that opens `room` on the site at `origin`
/// (`https://heartsync.example`): `/` for the main room, `/r/{room}` for
/// the others.
pub fn room_link(origin: &str, room: &RoomName) -> String {
    let origin = origin.trim_end_matches('/');
    if *room == RoomName::main() { format!("{origin}/") } else { format!("{origin}/r/{room}") }
}

/// `link` as a QR code, an `<svg>` element's markup: dark modules on a
/// light ground with its quiet zone (phone cameras need both), scaling to
/// whatever box the page gives it. Medium error correction: a link of a
/// few dozen characters stays small and still scans off a glossy screen.
pub fn qr_svg(link: &str) -> Result<String, qrcode::types::QrError> {
    let code = QrCode::with_error_correction_level(link.as_bytes(), EcLevel::M)?;
    let markup = code
        .render::<svg::Color<'_>>()
        .min_dimensions(160, 160)
        .dark_color(svg::Color("#1a0610"))
        .light_color(svg::Color("#ffffff"))
        .quiet_zone(true)
        .build();
    // The crate writes an XML declaration first, which HTML does not take.
    Ok(match markup.find("<svg") {
        Some(start) => markup[start..].to_owned(),
        None => markup,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room(name: &str) -> RoomName {
        RoomName::parse(name).expect("a valid room name")
    }

    #[test]
    fn the_main_room_is_the_site_itself() {
        assert_eq!(room_link("https://h.example", &RoomName::main()), "https://h.example/");
        assert_eq!(
            room_link("http://127.0.0.1:8080/", &room("tea")),
            "http://127.0.0.1:8080/r/tea"
        );
    }

    #[test]
    fn the_qr_code_is_inline_svg_of_the_link() {
        let svg = qr_svg("https://heartsync.example/r/our-room").expect("a QR code");
        assert!(svg.starts_with("<svg"), "{svg}");
        assert!(svg.trim_end().ends_with("</svg>"), "{svg}");
        assert!(svg.contains("#1a0610") && svg.contains("#ffffff"));
        // A longer link needs more modules, so its drawing is longer.
        let longer =
            qr_svg(&format!("https://heartsync.example/r/{}", "x".repeat(60))).expect("a QR code");
        assert!(longer.len() > svg.len());
    }

    #[test]
    fn a_link_too_long_for_any_qr_code_is_an_error() {
        assert!(qr_svg(&"x".repeat(5000)).is_err());
    }
}
