//! Figures: SVG drawn with plotters, written as is or rasterised to PNG with
//! resvg (text needs a system font; without one the PNG has no labels).

use std::path::Path;

/// Writes `svg` to `path`: as SVG for `.svg`, as PNG for `.png`.
pub(crate) fn save(path: &Path, svg: &str) -> Result<(), String> {
    match path.extension().and_then(|e| e.to_str()) {
        Some("svg") => std::fs::write(path, svg).map_err(|e| e.to_string()),
        Some("png") => png(svg, path),
        _ => Err(format!(
            "--plot {}: use a .svg or .png file",
            path.display()
        )),
    }
}

fn png(svg: &str, path: &Path) -> Result<(), String> {
    let mut options = resvg::usvg::Options::default();
    let fonts = options.fontdb_mut();
    fonts.load_system_fonts();
    // fontdb maps "sans-serif" to Arial; use a sans face this machine has.
    let families: Vec<String> = fonts
        .faces()
        .flat_map(|f| f.families.iter().map(|(name, _)| name.clone()))
        .collect();
    let sans = ["DejaVu Sans", "Liberation Sans", "Noto Sans", "FreeSans"]
        .into_iter()
        .find(|want| families.iter().any(|f| f == want))
        .map(String::from)
        .or_else(|| families.first().cloned());
    if let Some(family) = sans {
        fonts.set_sans_serif_family(family);
    }
    let tree = resvg::usvg::Tree::from_str(svg, &options).map_err(|e| e.to_string())?;
    let size = tree.size().to_int_size();
    let mut pixmap =
        resvg::tiny_skia::Pixmap::new(size.width(), size.height()).ok_or("an empty picture")?;
    pixmap.fill(resvg::tiny_skia::Color::WHITE);
    resvg::render(
        &tree,
        resvg::tiny_skia::Transform::default(),
        &mut pixmap.as_mut(),
    );
    pixmap.save_png(path).map_err(|e| e.to_string())
}
