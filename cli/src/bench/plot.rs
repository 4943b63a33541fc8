//! `--plot FILE.svg`: the latency CDFs of tally and the baselines, the throughput of
//! each transport as bars, or both side by side.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};

use hdrhistogram::Histogram;
use plotters::coord::Shift;
use plotters::prelude::*;

use super::{BenchError, latency, mpmc, throughput};
use crate::Failure;

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;

/// The plot file, checked (and created if new) before the run, so a bad path costs
/// no measurement.
pub struct Target {
    path: PathBuf,
    /// We created it: remove it again if the run fails.
    created: bool,
}

impl Target {
    /// Opens `path` for writing now; the error names the path (exit 2: an argument
    /// that cannot be used).
    pub fn claim(path: &Path) -> Result<Target, Failure> {
        let bad = |why: String| Failure::Usage(format!("--plot {}: {why}", path.display()));
        if path.is_dir() {
            return Err(bad("is a directory".into()));
        }
        let existed = path.exists();
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| bad(format!("cannot write: {e}")))?;
        Ok(Target {
            path: path.to_owned(),
            created: !existed,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The run failed: take back the empty file we made.
    pub fn abandon(self) {
        if self.created {
            let _ = std::fs::remove_file(&self.path);
        }
    }

    /// Draws what the run measured.
    pub fn draw(
        &self,
        lat: Option<&latency::Report>,
        thr: Option<&throughput::Report>,
        payload: usize,
    ) -> Result<(), Failure> {
        self.render(
            lat.map(|l| move |a: &Area| cdf(a, l, payload)),
            thr.map(|t| move |a: &Area| bars(a, t, payload)),
        )
    }

    /// Draws what an `--mpmc` run measured: the CDFs of the MPMC ring and its
    /// baselines, and bars of each transport's rate.
    pub fn draw_mpmc(
        &self,
        lat: Option<&mpmc::LatencyReport>,
        thr: Option<&mpmc::ThroughputReport>,
    ) -> Result<(), Failure> {
        let colors = [RGBColor(128, 128, 128), RED, BLUE, GREEN];
        self.render(
            lat.map(|l| {
                move |a: &Area| {
                    let series: Vec<_> = mpmc::latency_rows(l)
                        .into_iter()
                        .zip(colors)
                        .map(|((name, h), c)| (name, h, c))
                        .collect();
                    cdf_of(
                        a,
                        &format!(
                            "one-way latency CDF, MPMC 1 x 1, {} B messages",
                            mpmc::MSG_BYTES
                        ),
                        &series,
                    )
                }
            }),
            thr.map(|t| {
                move |a: &Area| {
                    let rows: Vec<(String, f64)> = mpmc::throughput_rows(t)
                        .into_iter()
                        .map(|(_, short, o)| (short, o.rate()))
                        .collect();
                    bars_of(
                        a,
                        &format!(
                            "throughput, MPMC {} x {}, {} B messages",
                            t.spec.producers,
                            t.spec.consumers,
                            mpmc::MSG_BYTES
                        ),
                        &rows,
                    )
                }
            }),
        )
    }

    /// A latency panel, a throughput panel, or both side by side.
    fn render(
        &self,
        lat: Option<impl Fn(&Area) -> Result<(), BenchError>>,
        thr: Option<impl Fn(&Area) -> Result<(), BenchError>>,
    ) -> Result<(), Failure> {
        let failed =
            |e: BenchError| Failure::Failed(format!("drawing {}: {e}", self.path.display()));
        let width = if lat.is_some() && thr.is_some() {
            1500
        } else {
            900
        };
        let root = SVGBackend::new(&self.path, (width, 560)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| failed(e.into()))?;
        let drawn = match (lat, thr) {
            (Some(l), Some(t)) => {
                let (left, right) = root.split_horizontally(900);
                l(&left).and_then(|()| t(&right))
            }
            (Some(l), None) => l(&root),
            (None, Some(t)) => t(&root),
            (None, None) => Ok(()),
        };
        drawn.map_err(failed)?;
        root.present().map_err(|e| failed(e.into()))?;
        Ok(())
    }
}

fn cdf(area: &Area, r: &latency::Report, payload: usize) -> Result<(), BenchError> {
    let series: [(&str, &Histogram<u64>, RGBColor); 5] = [
        ("floor (one shared cache line)", &r.floor, BLACK),
        (
            "two lines (one per direction)",
            &r.two_line,
            RGBColor(128, 128, 128),
        ),
        ("tally", &r.tally, RED),
        ("pipe", &r.pipe, BLUE),
        ("unix socket", &r.uds, GREEN),
    ];
    cdf_of(
        area,
        &format!("one-way latency CDF, {payload} B payload"),
        &series,
    )
}

/// The CDF of each histogram of `series`, on a log scale of nanoseconds.
fn cdf_of(
    area: &Area,
    caption: &str,
    series: &[(&str, &Histogram<u64>, RGBColor)],
) -> Result<(), BenchError> {
    let lo = series.iter().map(|s| s.1.min()).min().unwrap_or(1).max(1) as f64;
    let hi = series
        .iter()
        .map(|s| s.1.value_at_quantile(0.9999))
        .max()
        .unwrap_or(2) as f64;
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(56)
        .build_cartesian_2d((lo * 0.8..hi * 1.25).log_scale(), 0.0..1.0f64)?;
    chart
        .configure_mesh()
        .x_desc("one-way latency (ns, log scale)")
        .y_desc("fraction of messages")
        .draw()?;
    for &(name, h, color) in series {
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
    Ok(())
}

/// One bar per transport, in M msgs/s.
fn bars(area: &Area, r: &throughput::Report, payload: usize) -> Result<(), BenchError> {
    let rows: Vec<(String, f64)> = throughput::rows(r)
        .into_iter()
        // `zero-copy reserve/commit`: the part before the comma fits under a bar.
        .map(|(name, run)| {
            (
                name.split(',').next().unwrap_or_default().to_owned(),
                run.rate(),
            )
        })
        .collect();
    bars_of(area, &format!("throughput, {payload} B payload"), &rows)
}

/// One bar per (label, msgs/s), labelled in M msgs/s.
fn bars_of(area: &Area, caption: &str, rows: &[(String, f64)]) -> Result<(), BenchError> {
    let rates: Vec<f64> = rows.iter().map(|(_, rate)| rate / 1e6).collect();
    let top = rates.iter().copied().fold(0.0, f64::max).max(1e-3) * 1.15;
    let n = rows.len() as u32;
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(56)
        .build_cartesian_2d((0..n).into_segmented(), 0.0..top)?;
    let label = |v: &SegmentValue<u32>| match v {
        SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => rows
            .get(*i as usize)
            .map_or(String::new(), |(name, _)| name.clone()),
        SegmentValue::Last => String::new(),
    };
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(rows.len())
        .x_label_formatter(&label)
        .y_desc("M msgs/s")
        .draw()?;
    chart.draw_series(rates.iter().enumerate().map(|(i, &v)| {
        let i = i as u32;
        let mut bar = Rectangle::new(
            [
                (SegmentValue::Exact(i), 0.0),
                (SegmentValue::Exact(i + 1), v),
            ],
            RED.mix(0.7).filled(),
        );
        bar.set_margin(0, 0, 30, 30);
        bar
    }))?;
    chart.draw_series(rates.iter().enumerate().map(|(i, &v)| {
        Text::new(
            format!("{v:.1} M"),
            (SegmentValue::CenterOf(i as u32), v + top * 0.02),
            ("sans-serif", 16),
        )
    }))?;
    Ok(())
}
