//! `--plot FILE.svg`: the latency CDF of tally and the baselines.

use std::path::Path;

use hdrhistogram::Histogram;
use plotters::prelude::*;

use super::BenchError;
use super::latency::Report;

pub fn cdf(path: &Path, r: &Report, payload: usize) -> Result<(), BenchError> {
    let series: [(&str, &Histogram<u64>, RGBColor); 4] = [
        ("floor (one shared cache line)", &r.floor, BLACK),
        ("tally", &r.tally, RED),
        ("pipe", &r.pipe, BLUE),
        ("unix socket", &r.uds, GREEN),
    ];
    let lo = series.iter().map(|s| s.1.min()).min().unwrap_or(1).max(1) as f64;
    let hi = series
        .iter()
        .map(|s| s.1.value_at_quantile(0.9999))
        .max()
        .unwrap_or(2) as f64;
    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("one-way latency CDF, {payload} B payload"),
            ("sans-serif", 22),
        )
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(56)
        .build_cartesian_2d((lo * 0.8..hi * 1.25).log_scale(), 0.0..1.0f64)?;
    chart
        .configure_mesh()
        .x_desc("one-way latency (ns, log scale)")
        .y_desc("fraction of messages")
        .draw()?;
    for (name, h, color) in series {
        let total = h.len() as f64;
        let mut seen = 0u64;
        let points: Vec<(f64, f64)> = h
            .iter_recorded()
            .map(|v| {
                seen += v.count_at_value();
                (
                    h.highest_equivalent(v.value_iterated_to()).max(1) as f64,
                    seen as f64 / total,
                )
            })
            .collect();
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))?
            .label(name)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerRight)
        .draw()?;
    root.present()?;
    Ok(())
}
