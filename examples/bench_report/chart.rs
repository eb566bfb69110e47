//! The SVG roofline-style chart: softmax throughput against row length at a fixed
//! `rows * cols`, one thread, one series per tier, with the exp and bandwidth ceilings.

use std::error::Error;
use std::path::Path;

use plotters::prelude::*;
use softmax_kernels::Isa;

use crate::cases::{Family, SWEEP_ELEMS};
use crate::limits::Limits;
use crate::machine::Level;
use crate::report::{fmt_num, Row};
use crate::tier_name;

fn tier_color(t: Isa) -> RGBColor {
    match t {
        Isa::Scalar => RGBColor(127, 127, 127),
        Isa::Portable => RGBColor(44, 160, 44),
        Isa::Avx2 => RGBColor(31, 119, 180),
        Isa::Avx512 => RGBColor(214, 39, 40),
    }
}

fn level_color(l: Level) -> RGBColor {
    match l {
        Level::L1 => RGBColor(188, 189, 34),
        Level::L2 => RGBColor(148, 103, 189),
        Level::L3 => RGBColor(0, 0, 0),
        Level::Dram => RGBColor(140, 86, 75),
    }
}

/// Draws the chart from the `softmax_sweep` rows; `Ok(false)` when there are none.
pub fn draw(
    path: &Path,
    rows: &[Row],
    limits: &Limits,
    tiers: &[Isa],
) -> Result<bool, Box<dyn Error>> {
    let sweep: Vec<&Row> = rows
        .iter()
        .filter(|r| r.m.case.family == Family::SoftmaxSweep && r.m.case.threads == 1)
        .collect();
    if sweep.is_empty() {
        return Ok(false);
    }
    // Series: (tier, [(cols, Gelem/s)]).
    let series: Vec<(Isa, Vec<(f64, f64)>)> = tiers
        .iter()
        .map(|&t| {
            let pts = sweep
                .iter()
                .filter(|r| r.m.case.tier == t)
                .map(|r| (r.m.case.shape.c as f64, r.throughput))
                .collect();
            (t, pts)
        })
        .filter(|(_, p): &(Isa, Vec<(f64, f64)>)| !p.is_empty())
        .collect();
    // Ceilings in Gelem/s: the tiers' exp throughput, and copy bandwidth / 8 B per element.
    let exp: Vec<(Isa, f64)> = series
        .iter()
        .filter_map(|(t, _)| limits.exp(*t, 1).map(|l| (*t, l.value)))
        .collect();
    let bw: Vec<(Level, f64, f64)> = [Level::L2, Level::L3, Level::Dram]
        .into_iter()
        .filter_map(|lv| limits.copy(lv, 1).map(|l| (lv, l.value, l.value / 8.0)))
        .collect();

    let xs = series.iter().flat_map(|(_, p)| p.iter().map(|q| q.0));
    let (xmin, xmax) = xs.fold((f64::MAX, 0.0f64), |(a, b), x| (a.min(x), b.max(x)));
    let ys = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|q| q.1))
        .chain(exp.iter().map(|e| e.1))
        .chain(bw.iter().map(|b| b.2))
        .filter(|v| *v > 0.0 && v.is_finite());
    let (ymin, ymax) = ys.fold((f64::MAX, 0.0f64), |(a, b), y| (a.min(y), b.max(y)));
    let (x0, x1) = (xmin / 1.5, xmax * 1.5);
    let (y0, y1) = (ymin / 2.0, ymax * 2.0);

    let root = SVGBackend::new(path, (1200, 720)).into_drawing_area();
    root.fill(&WHITE)?;
    let (plot, side) = root.split_horizontally(840);
    let caption = format!(
        "softmax, rows x cols = {} ({} MiB in + out), 1 thread",
        SWEEP_ELEMS,
        (SWEEP_ELEMS * 8) >> 20
    );
    let mut chart = ChartBuilder::on(&plot)
        .caption(caption, ("sans-serif", 18))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(64)
        .build_cartesian_2d((x0..x1).log_scale(), (y0..y1).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("row length (cols); rows = elements / cols")
        .y_desc("Gelem/s (log)")
        .x_label_formatter(&|v| format!("{}", v.round() as u64))
        .y_label_formatter(&|v| fmt_num(*v))
        .draw()?;

    // Legend entries: (label, color, width, dash length (0: solid)).
    let mut legend: Vec<(String, RGBColor, u32, i32)> = Vec::new();
    for &(lv, gbs, gel) in &bw {
        let c = level_color(lv);
        chart.draw_series(DashedLineSeries::new(
            vec![(x0, gel), (x1, gel)],
            8,
            6,
            c.stroke_width(2),
        ))?;
        legend.push((
            format!(
                "{} copy {} GB/s / 8 B = {} Gelem/s",
                lv.name(),
                fmt_num(gbs),
                fmt_num(gel)
            ),
            c,
            2,
            8,
        ));
    }
    for &(t, v) in &exp {
        let c = tier_color(t);
        chart.draw_series(DashedLineSeries::new(
            vec![(x0, v), (x1, v)],
            3,
            4,
            c.stroke_width(1),
        ))?;
        legend.push((
            format!("exp ceiling {}: {} Gelem/s", tier_name(t), fmt_num(v)),
            c,
            1,
            3,
        ));
    }
    for (t, pts) in &series {
        let c = tier_color(*t);
        chart.draw_series(LineSeries::new(pts.iter().copied(), c.stroke_width(2)).point_size(3))?;
        legend.push((format!("softmax {} (median)", tier_name(*t)), c, 3, 0));
    }

    // The legend, beside the plot.
    let font = ("sans-serif", 13).into_font();
    side.draw(&Text::new("ceilings (dashed) and", (8, 48), font.clone()))?;
    side.draw(&Text::new("measured (solid):", (8, 64), font.clone()))?;
    for (i, (label, c, w, dash)) in legend.iter().enumerate() {
        let y = 96 + 24 * i as i32;
        if *dash == 0 {
            side.draw(&PathElement::new(vec![(8, y), (40, y)], c.stroke_width(*w)))?;
            side.draw(&Circle::new((24, y), 3, c.stroke_width(2)))?;
        } else {
            let mut x = 8;
            while x < 40 {
                let e = (x + dash).min(40);
                side.draw(&PathElement::new(vec![(x, y), (e, y)], c.stroke_width(*w)))?;
                x = e + dash.max(&3);
            }
        }
        side.draw(&Text::new(label.as_str(), (48, y - 7), font.clone()))?;
    }
    let notes = [
        "Limits and kernels measured in the same run;",
        "ceilings: the fastest sample of the better of",
        "two passes; kernels: medians.",
    ];
    let base = 96 + 24 * legend.len() as i32 + 24;
    for (i, n) in notes.iter().enumerate() {
        side.draw(&Text::new(*n, (8, base + 18 * i as i32), font.clone()))?;
    }
    root.present()?;
    Ok(true)
}
