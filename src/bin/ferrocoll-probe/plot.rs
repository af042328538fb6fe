//! `--plot`: bus bandwidth and latency against size, as PNG or SVG (plotters, with an embedded
//! DejaVu font so no system font library is needed).

use std::path::Path;
use std::sync::Once;

use ferrocoll::Collective;
use plotters::coord::Shift;
use plotters::prelude::*;

use crate::report::Row;
use crate::Res;

static FONT: Once = Once::new();

fn register_font() -> Res<()> {
    let mut result = Ok(());
    FONT.call_once(|| {
        result = plotters::style::register_font(
            "sans-serif",
            FontStyle::Normal,
            dejavu::sans::regular(),
        )
        .map_err(|_| "cannot load the embedded font".to_string());
    });
    result.map_err(Into::into)
}

/// Draws the plot of `rows` to `path` (`.png` or `.svg`).
pub fn draw(path: &Path, kind: Collective, n: usize, rows: &[Row]) -> Res<()> {
    register_font()?;
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    let size = (1280, 520);
    let title = format!("ferrocoll {} on {n} ranks", kind.name());
    match ext.as_deref() {
        Some("png") => render(
            BitMapBackend::new(path, size).into_drawing_area(),
            &title,
            rows,
        ),
        Some("svg") => render(
            SVGBackend::new(path, size).into_drawing_area(),
            &title,
            rows,
        ),
        _ => Err(format!(
            "--plot {}: the file name must end in .png or .svg",
            path.display()
        )
        .into()),
    }
    .map_err(|e| format!("cannot draw {}: {e}", path.display()).into())
}

/// One line: label and (size, value) points.
struct Series {
    label: String,
    points: Vec<(f64, f64)>,
}

fn series(rows: &[Row], pick: impl Fn(&crate::report::Half) -> f64) -> Vec<Series> {
    let mut out: Vec<Series> = Vec::new();
    for r in rows {
        for (place, h) in [("out-of-place", &r.out_of_place), ("in-place", &r.in_place)] {
            let Some(h) = h else { continue };
            let label = format!("{} {} {place}", r.dtype, r.redop);
            let point = ((r.size.max(1) as f64).log2(), pick(h));
            match out.iter_mut().find(|s| s.label == label) {
                Some(s) => s.points.push(point),
                None => out.push(Series {
                    label,
                    points: vec![point],
                }),
            }
        }
    }
    out
}

/// Tick label of a log2(size) coordinate: `1K`, `64M`, ... at whole powers of two.
fn human(log2: f64) -> String {
    if log2.fract().abs() > 1e-9 || !(0.0..63.0).contains(&log2) {
        return String::new();
    }
    let b = 1u64 << (log2 as u32);
    match b {
        _ if b >= 1 << 30 && b % (1 << 30) == 0 => format!("{}G", b >> 30),
        _ if b >= 1 << 20 && b % (1 << 20) == 0 => format!("{}M", b >> 20),
        _ if b >= 1 << 10 && b % (1 << 10) == 0 => format!("{}K", b >> 10),
        _ => b.to_string(),
    }
}

fn extent(vals: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = vals.fold((f64::INFINITY, 0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if !lo.is_finite() || hi <= 0.0 {
        return (1.0, 2.0);
    }
    let lo = lo.max(hi * 1e-9).max(f64::MIN_POSITIVE);
    if lo >= hi {
        (lo / 2.0, hi * 2.0)
    } else {
        (lo, hi)
    }
}

fn render<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, title: &str, rows: &[Row]) -> Res<()>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)?;
    let root = root.titled(title, ("sans-serif", 22))?;
    let (left, right) = root.split_horizontally(root.dim_in_pixel().0 / 2);
    let bw = series(rows, |h| h.busbw_gbps);
    let lat = series(rows, |h| h.time_us);
    // Sizes on a log2 axis, ticks labelled as sizes.
    let (xlo, xhi) = extent(rows.iter().map(|r| r.size.max(1) as f64));
    let (xlo, xhi) = (
        xlo.log2().floor(),
        xhi.log2().ceil().max(xlo.log2().floor() + 1.0),
    );
    let ymax = bw
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .fold(0f64, f64::max);
    let ymax = if ymax > 0.0 { ymax * 1.1 } else { 1.0 };

    let mut chart = ChartBuilder::on(&left)
        .caption("bus bandwidth", ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(xlo..xhi, 0f64..ymax)?;
    chart
        .configure_mesh()
        .x_desc("size (B)")
        .x_labels(((xhi - xlo) as usize + 1).min(16))
        .y_desc("busbw (GB/s)")
        .x_label_formatter(&|x| human(*x))
        .draw()?;
    for (i, s) in bw.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(s.points.clone(), color.stroke_width(2)))?
            .label(s.label.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color));
        chart.draw_series(s.points.iter().map(|p| Circle::new(*p, 3, color.filled())))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;

    let (tlo, thi) = extent(lat.iter().flat_map(|s| s.points.iter().map(|p| p.1)));
    let mut chart = ChartBuilder::on(&right)
        .caption("latency", ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(xlo..xhi, (tlo / 1.5..thi * 1.5).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("size (B)")
        .x_labels(((xhi - xlo) as usize + 1).min(16))
        .y_desc("time (us)")
        .y_label_formatter(&|y| crate::report::fmt_g(*y))
        .x_label_formatter(&|x| human(*x))
        .draw()?;
    for (i, s) in lat.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(s.points.clone(), color.stroke_width(2)))?
            .label(s.label.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color));
        chart.draw_series(s.points.iter().map(|p| Circle::new(*p, 3, color.filled())))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}
