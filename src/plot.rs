//! PNG charts (histograms, line charts) with plotters. Text needs a TrueType font:
//! `$INSTILL_FONT`, else a common system font (DejaVu, Liberation, Noto).
use crate::{Error, Result};
use plotters::prelude::*;
use std::path::Path;
use std::sync::OnceLock;

const FONT_PATHS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/truetype/noto/NotoSans-Regular.ttf",
    "/System/Library/Fonts/Supplemental/Arial.ttf",
];

fn ensure_font() -> Result<()> {
    static FONT: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    FONT.get_or_init(|| {
        let candidates: Vec<String> = std::env::var("INSTILL_FONT").into_iter().chain(FONT_PATHS.iter().map(|s| s.to_string())).collect();
        let path =
            candidates.iter().find(|p| Path::new(p).is_file()).ok_or_else(|| "no TrueType font for chart labels: set INSTILL_FONT=/path/to/font.ttf or install fonts-dejavu-core".to_string())?;
        let bytes: &'static [u8] = Box::leak(std::fs::read(path).map_err(|e| format!("{path}: {e}"))?.into_boxed_slice());
        plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).map_err(|_| format!("{path}: not a usable font"))
    })
    .clone()
    .map_err(Error::Input)
}

fn draw_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::file(path, format!("drawing chart: {e}"))
}

/// A histogram of `values` in `bins` equal-width bins, written atomically as PNG.
pub fn histogram(path: &Path, title: &str, x_label: &str, values: &[f64], bins: usize) -> Result<()> {
    ensure_font()?;
    let (lo, hi) = values.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
    let (lo, hi) = if values.is_empty() {
        (0.0, 1.0)
    } else if hi > lo {
        (lo, hi)
    } else {
        (lo - 0.5, hi + 0.5)
    };
    let width = (hi - lo) / bins as f64;
    let mut counts = vec![0usize; bins];
    for &v in values {
        counts[(((v - lo) / width) as usize).min(bins - 1)] += 1;
    }
    let top = counts.iter().copied().max().unwrap_or(1).max(1);
    let tmp = path.with_extension("partial.png");
    {
        let root = BitMapBackend::new(&tmp, (800, 500)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| draw_err(path, e))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 22))
            .margin(15)
            .x_label_area_size(40)
            .y_label_area_size(55)
            .build_cartesian_2d(lo..hi, 0..top + top / 10 + 1)
            .map_err(|e| draw_err(path, e))?;
        chart.configure_mesh().x_desc(x_label).y_desc("examples").draw().map_err(|e| draw_err(path, e))?;
        chart
            .draw_series(counts.iter().enumerate().map(|(i, &c)| {
                let x0 = lo + i as f64 * width;
                Rectangle::new([(x0, 0), (x0 + width, c)], BLUE.mix(0.6).filled())
            }))
            .map_err(|e| draw_err(path, e))?;
        root.present().map_err(|e| draw_err(path, e))?;
    }
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// Line chart of named series of (x, y) points, written atomically as PNG.
pub fn lines(path: &Path, title: &str, x_label: &str, y_label: &str, series: &[(&str, Vec<(f64, f64)>)]) -> Result<()> {
    ensure_font()?;
    let pts = series.iter().flat_map(|s| s.1.iter());
    let (x0, x1, y0, y1) = pts.fold((f64::INFINITY, f64::NEG_INFINITY, f64::INFINITY, f64::NEG_INFINITY), |(a, b, c, d), &(x, y)| (a.min(x), b.max(x), c.min(y), d.max(y)));
    if !x0.is_finite() {
        return Err(Error::Input(format!("{title}: nothing to plot")));
    }
    let pad = ((y1 - y0) * 0.05).max(1e-6);
    let tmp = path.with_extension("partial.png");
    {
        let root = BitMapBackend::new(&tmp, (900, 500)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| draw_err(path, e))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 22))
            .margin(15)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(x0..x1.max(x0 + 1.0), (y0 - pad)..(y1 + pad))
            .map_err(|e| draw_err(path, e))?;
        chart.configure_mesh().x_desc(x_label).y_desc(y_label).draw().map_err(|e| draw_err(path, e))?;
        for (i, (name, data)) in series.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            chart
                .draw_series(LineSeries::new(data.iter().copied(), color.stroke_width(2)))
                .map_err(|e| draw_err(path, e))?
                .label(*name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
        }
        chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw().map_err(|e| draw_err(path, e))?;
        root.present().map_err(|e| draw_err(path, e))?;
    }
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// Grouped horizontal bars: one row per label (its name written above its bars), one
/// bar per series, written atomically as PNG. Horizontal, so long names stay readable.
pub fn bars(path: &Path, title: &str, x_label: &str, labels: &[String], series: &[(&str, Vec<f64>)]) -> Result<()> {
    ensure_font()?;
    if labels.is_empty() || series.is_empty() {
        return Err(Error::Input(format!("{title}: nothing to plot")));
    }
    let top = series.iter().flat_map(|s| s.1.iter().copied()).fold(0f64, f64::max).max(1.0) * 1.15;
    let rows = labels.len();
    let height = (140 + rows * (22 + 14 * series.len())).min(6000) as u32;
    let tmp = path.with_extension("partial.png");
    {
        let root = BitMapBackend::new(&tmp, (1000, height)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| draw_err(path, e))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 22))
            .margin(15)
            .x_label_area_size(40)
            .y_label_area_size(10)
            .build_cartesian_2d(0f64..top, 0f64..rows as f64)
            .map_err(|e| draw_err(path, e))?;
        chart.configure_mesh().x_desc(x_label).disable_y_axis().disable_y_mesh().draw().map_err(|e| draw_err(path, e))?;
        // Row r spans [r, r + 1) from the top: its name in the upper part, then the bars.
        let y_of = |r: usize, f: f64| (rows - 1 - r) as f64 + 1.0 - f;
        let names = labels.iter().enumerate().map(|(r, l)| Text::new(l.clone(), (top * 0.005, y_of(r, 0.05)), ("sans-serif", 14)));
        chart.draw_series(names).map_err(|e| draw_err(path, e))?;
        let k = series.len() as f64;
        for (si, (name, vals)) in series.iter().enumerate() {
            let color = Palette99::pick(si).to_rgba();
            let (a, b) = (0.35 + 0.6 * si as f64 / k, 0.35 + 0.6 * (si as f64 + 0.85) / k);
            let rects = vals.iter().enumerate().map(move |(r, &v)| Rectangle::new([(0.0, y_of(r, a)), (v, y_of(r, b))], color.filled()));
            chart.draw_series(rects).map_err(|e| draw_err(path, e))?.label(*name).legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 15, y + 5)], color.filled()));
        }
        chart.configure_series_labels().position(SeriesLabelPosition::LowerRight).background_style(WHITE.mix(0.8)).border_style(BLACK).draw().map_err(|e| draw_err(path, e))?;
        root.present().map_err(|e| draw_err(path, e))?;
    }
    std::fs::rename(&tmp, path)?;
    Ok(())
}
