//! The QR code of an enrolment's `otpauth://` URI, as an SVG document, so that a page
//! (the console, or an app's own) can show something a phone's authenticator scans
//! without a QR library of its own. Rendered here because the secret is in this one
//! answer only: no later request could draw it.

use qrcode::render::svg;
use qrcode::{EcLevel, QrCode};

/// Modules of quiet zone and pixels per module: what scanners expect, at a size that
/// stays readable on a laptop screen.
const MODULE_PX: u32 = 6;

/// The matrix for `text` at error-correction level M (15 % of the code may be lost to a
/// glare or a crease); `None` only for a text too long for any QR version.
fn code(text: &str) -> Option<QrCode> {
    QrCode::with_error_correction_level(text.as_bytes(), EcLevel::M).ok()
}

/// `text` as a standalone SVG image: black modules on white, a quiet zone of four
/// modules, no script, no style attribute (the console's CSP allows neither).
pub fn svg(text: &str) -> Option<String> {
    let code = code(text)?;
    Some(
        code.render::<svg::Color<'_>>()
            .quiet_zone(true)
            .module_dimensions(MODULE_PX, MODULE_PX)
            .dark_color(svg::Color("#000000"))
            .light_color(svg::Color("#ffffff"))
            .build(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes the code's matrix with an independent decoder (rqrr), as a camera would
    /// read it after finding the modules.
    fn decoded(code: &QrCode) -> String {
        let width = code.width();
        let colors = code.to_colors();
        // Rasterized with the four modules of quiet zone scanners need, 4 px a module.
        let (quiet, px) = (4usize, 4usize);
        let side = (width + 2 * quiet) * px;
        let mut image = rqrr::PreparedImage::prepare_from_greyscale(side, side, |x, y| {
            let (mx, my) = ((x / px).wrapping_sub(quiet), (y / px).wrapping_sub(quiet));
            let dark = mx < width && my < width && colors[my * width + mx] == qrcode::Color::Dark;
            if dark { 0 } else { 255 }
        });
        let grids = image.detect_grids();
        assert_eq!(grids.len(), 1, "one code in the picture");
        grids[0].decode().expect("decodes").1
    }

    #[test]
    fn an_otpauth_uri_round_trips_through_an_independent_decoder() {
        let uri = "otpauth://totp/gatehouse:someone%40example.com?secret=JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP&issuer=gatehouse&algorithm=SHA1&digits=6&period=30";
        assert_eq!(decoded(&code(uri).expect("fits")), uri);
    }

    #[test]
    fn the_svg_is_an_image_without_script_or_style() {
        let svg = svg("otpauth://totp/x:y?secret=AAAA").expect("fits");
        assert!(svg.contains("<svg") && svg.contains("</svg>"), "{svg}");
        for banned in ["<script", "style=", "javascript:"] {
            assert!(!svg.contains(banned), "{banned} in {svg}");
        }
    }

    #[test]
    fn a_text_too_long_for_any_version_is_none_not_a_panic() {
        assert!(svg(&"x".repeat(5000)).is_none());
    }
}
