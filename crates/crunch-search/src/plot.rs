//! The rate–distortion figure of a search: bits per weight (x) against calibration KL (y, log
//! scale) for the uniform configurations and the searched point(s), beside a bar chart of the
//! level each layer got. Drawn with `plotters` (decision 085), as SVG or PNG.

use crate::{Error, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::Path;

/// What the figure shows.
pub struct Figure<'a> {
    /// (level name, bits per weight, KL) per uniform configuration.
    pub uniform: &'a [(String, f64, f64)],
    /// (bits per weight, KL) of each searched configuration.
    pub searched: &'a [(f64, f64)],
    /// (name, bits per weight, KL) of reference files (`--compare`, e.g. llama.cpp's GGUFs).
    pub compare: &'a [(String, f64, f64)],
    /// (layer name, name of its chosen level) per layer, in model order.
    pub layers: &'a [(String, String)],
}

fn plot_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::BadFile {
        path: path.to_path_buf(),
        problem: format!("drawing the figure: {e}"),
    }
}

/// Draws `fig` to `path`: `.svg` (vector) or `.png`. Written to a temporary name and renamed.
pub fn draw(path: &Path, fig: &Figure) -> Result<()> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(|e| e.to_ascii_lowercase());
    let tmp = path.with_extension(format!(
        "tmp{}.{}",
        std::process::id(),
        ext.as_deref().unwrap_or("")
    ));
    let size = (1200, 500);
    match ext.as_deref() {
        Some("svg") => {
            register_font(path)?;
            let root = SVGBackend::new(&tmp, size).into_drawing_area();
            draw_on(&root, fig).map_err(|e| plot_err(path, e))?;
            root.present().map_err(|e| plot_err(path, e))?;
        }
        Some("png") => {
            register_font(path)?;
            let root = BitMapBackend::new(&tmp, size).into_drawing_area();
            draw_on(&root, fig).map_err(|e| plot_err(path, e))?;
            root.present().map_err(|e| plot_err(path, e))?;
        }
        _ => {
            return Err(Error::BadFile {
                path: path.to_path_buf(),
                problem: "--plot takes a .svg or .png file name".into(),
            })
        }
    }
    std::fs::rename(&tmp, path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Text is laid out and drawn with DejaVu Sans Mono, shipped with the crate
/// (`assets/DejaVuSansMono.ttf`, its free license beside it), so figures look the same on
/// every machine and need no system font library.
static FONT: &[u8] = include_bytes!("../assets/DejaVuSansMono.ttf");

fn register_font(path: &Path) -> Result<()> {
    plotters::style::register_font("sans-serif", FontStyle::Normal, FONT).map_err(|_| {
        Error::BadFile {
            path: path.to_path_buf(),
            problem: "the figure's font could not be loaded".into(),
        }
    })
}

type DrawResult<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn draw_on<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, fig: &Figure) -> DrawResult<()>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)?;
    let (left, right) = root.split_horizontally(560);
    rate_distortion(&left, fig)?;
    levels_chart(&right, fig)?;
    Ok(())
}

fn rate_distortion<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    fig: &Figure,
) -> DrawResult<()>
where
    DB::ErrorType: 'static,
{
    let pts: Vec<(f64, f64)> = fig
        .uniform
        .iter()
        .map(|u| (u.1, u.2))
        .chain(fig.searched.iter().copied())
        .chain(fig.compare.iter().map(|c| (c.1, c.2)))
        .filter(|p| p.1 > 0.0 && p.1.is_finite())
        .collect();
    let (x0, x1) = pts.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |a, p| {
        (a.0.min(p.0), a.1.max(p.0))
    });
    let (y0, y1) = pts.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |a, p| {
        (a.0.min(p.1), a.1.max(p.1))
    });
    let (x0, x1) = if x0.is_finite() {
        (x0 - 0.3, x1 + 0.3)
    } else {
        (0.0, 8.0)
    };
    let (y0, y1) = if y0.is_finite() {
        (y0 / 1.5, y1 * 1.5)
    } else {
        (1e-4, 1.0)
    };
    let mut chart = ChartBuilder::on(area)
        .caption("rate–distortion (calibration)", ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(x0..x1, (y0..y1).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("bits per weight (linear layers)")
        .y_desc("KL(original ‖ compressed)")
        .draw()?;
    let uniform: Vec<(f64, f64)> = fig.uniform.iter().map(|u| (u.1, u.2)).collect();
    chart
        .draw_series(LineSeries::new(uniform.clone(), BLUE.stroke_width(2)))?
        .label("uniform levels")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], BLUE.stroke_width(2)));
    chart.draw_series(uniform.iter().map(|&p| Circle::new(p, 4, BLUE.filled())))?;
    chart.draw_series(
        fig.uniform
            .iter()
            .map(|u| Text::new(u.0.clone(), (u.1, u.2), ("sans-serif", 12).into_font())),
    )?;
    chart
        .draw_series(
            fig.searched
                .iter()
                .map(|&p| TriangleMarker::new(p, 7, RED.filled())),
        )?
        .label("searched (EvoPress)")
        .legend(|(x, y)| TriangleMarker::new((x + 8, y), 6, RED.filled()));
    if !fig.compare.is_empty() {
        chart
            .draw_series(
                fig.compare
                    .iter()
                    .map(|c| Cross::new((c.1, c.2), 6, BLACK.stroke_width(2))),
            )?
            .label("reference files")
            .legend(|(x, y)| Cross::new((x + 8, y), 5, BLACK.stroke_width(2)));
        chart.draw_series(
            fig.compare
                .iter()
                .map(|c| Text::new(c.0.clone(), (c.1, c.2), ("sans-serif", 11).into_font())),
        )?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

fn levels_chart<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, fig: &Figure) -> DrawResult<()>
where
    DB::ErrorType: 'static,
{
    let n = fig.layers.len().max(1);
    // The levels in the order they first appear from the smallest uniform one: each distinct
    // name is a row of the chart (names of different ladders, e.g. Q2_K and IQ4_NL, are
    // distinct levels).
    let mut names: Vec<String> = Vec::new();
    for u in fig.uniform {
        for part in u.0.split('/') {
            if !names.iter().any(|n| n == part) {
                names.push(part.to_string());
            }
        }
    }
    for (_, l) in fig.layers {
        if !names.contains(l) {
            names.push(l.clone());
        }
    }
    let top = names.len().max(1);
    let mut chart = ChartBuilder::on(area)
        .caption("chosen level per layer", ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0..n, 0..top)?;
    let labels = names.clone();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_desc("linear layer (model order: q k v o gate up down per block)")
        .y_desc("level")
        .y_labels(top + 1)
        .y_label_formatter(&move |l: &usize| {
            labels.get(l.wrapping_sub(1)).cloned().unwrap_or_default()
        })
        .draw()?;
    let colors = [BLUE, GREEN, MAGENTA, CYAN, RED, BLACK];
    chart.draw_series(fig.layers.iter().enumerate().map(|(i, (_, l))| {
        let c = colors[i % 7 % colors.len()];
        let h = names.iter().position(|n| n == l).unwrap_or(0);
        Rectangle::new([(i, 0), (i + 1, h + 1)], c.mix(0.7).filled())
    }))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_an_svg() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("rd.svg");
        let uniform = vec![
            ("gptq2".to_string(), 2.2, 1.5),
            ("gptq3".to_string(), 3.2, 0.4),
            ("gptq4".to_string(), 4.2, 0.1),
        ];
        let layers: Vec<(String, String)> = (0..14)
            .map(|i| (format!("l{i}"), uniform[i % 3].0.clone()))
            .collect();
        let fig = Figure {
            uniform: &uniform,
            searched: &[(3.0, 0.3)],
            compare: &[("llama Q3_K_M".to_string(), 3.1, 0.35)],
            layers: &layers,
        };
        draw(&p, &fig).unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.starts_with("<svg") && text.contains("rate–distortion"));
        assert!(draw(&d.path().join("rd.pdf"), &fig).is_err());
    }
}
