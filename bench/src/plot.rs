//! Line charts as hand-written SVG, for the pictures the scenarios draw (the abuse scenario's RSS,
//! the soak's drift, the overload step): one or more panels stacked in one picture, each with
//! round-numbered axes, a polyline per series, a legend giving each series' peak, and shaded
//! spans marking phases (the upload phase of the uploads scenario).

use std::fmt::Write as _;

/// One line of a panel: `(x, y)` points in order of x.
#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

impl Series {
    pub fn new(name: impl Into<String>, points: Vec<(f64, f64)>) -> Series {
        Series {
            name: name.into(),
            points,
        }
    }
}

/// One chart: its title (may be empty), axis labels, lines and shaded spans of x.
#[derive(Debug, Clone)]
pub struct Panel {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
    pub bands: Vec<Band>,
}

/// A span of x shaded behind the lines, named at its top: a phase of the measurement.
#[derive(Debug, Clone)]
pub struct Band {
    pub from: f64,
    pub to: f64,
    pub label: String,
}

impl Band {
    pub fn new(from: f64, to: f64, label: impl Into<String>) -> Band {
        Band {
            from,
            to,
            label: label.into(),
        }
    }
}

const W: f64 = 960.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 250.0;
/// The picture's title takes this much at the top.
const HEAD: f64 = 50.0;
/// Each panel's own title, above its plot area (when it has one).
const PANEL_HEAD: f64 = 26.0;
/// Below each plot area: tick labels and the x label.
const BOTTOM: f64 = 60.0;
const COLORS: [&str; 6] = [
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b",
];
/// Shades of the bands, in turn, so that bands side by side are told apart.
const BAND_COLORS: [&str; 3] = ["#f2c46d", "#9ecae1", "#a1d99b"];

/// A step of 1, 2 or 5 times a power of ten that cuts `0..max` into five to ten parts.
pub fn tick_step(max: f64) -> f64 {
    let rough = (max / 8.0).max(1e-9);
    let power = 10f64.powf(rough.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * power)
        .find(|step| *step >= rough)
        .unwrap_or(10.0 * power)
}

/// A tick label: no trailing zeros.
pub fn trim_number(v: f64) -> String {
    let text = format!("{v:.2}");
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The picture: `title` on top, then the panels one under the other, each `plot_h` high (its
/// plot area). x runs from 0 to the largest x of the panel, y from 0 to the tick above its
/// largest y.
pub fn svg(title: &str, panels: &[Panel], plot_h: f64) -> String {
    let panel_h = |p: &Panel| (if p.title.is_empty() { 0.0 } else { PANEL_HEAD }) + plot_h + BOTTOM;
    let h = HEAD + panels.iter().map(panel_h).sum::<f64>();
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{h}" viewBox="0 0 {W} {h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{W}" height="{h}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="24" text-anchor="middle" font-size="15">{}</text>"#,
        W / 2.0,
        xml_escape(title)
    );
    let mut top = HEAD;
    for panel in panels {
        draw_panel(&mut s, panel, top, plot_h);
        top += panel_h(panel);
    }
    s.push_str("</svg>\n");
    s
}

fn draw_panel(s: &mut String, panel: &Panel, mut top: f64, plot_h: f64) {
    let plot_w = W - LEFT - RIGHT;
    if !panel.title.is_empty() {
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="13">{}</text>"#,
            LEFT + plot_w / 2.0,
            top + 14.0,
            xml_escape(&panel.title)
        );
        top += PANEL_HEAD;
    }
    let points = || panel.series.iter().flat_map(|s| s.points.iter());
    let x_max = points()
        .map(|p| p.0)
        .chain(panel.bands.iter().map(|b| b.to))
        .fold(1e-9, f64::max);
    let y_max = points().map(|p| p.1).fold(1.0, f64::max);
    let (x_step, y_step) = (tick_step(x_max), tick_step(y_max));
    // x ends with the data; y at the next tick above the highest point.
    let x_end = x_max;
    let y_end = (y_max / y_step).ceil() * y_step;
    let x = |t: f64| LEFT + t / x_end * plot_w;
    let y = |v: f64| top + plot_h - v / y_end * plot_h;

    let mut t = 0.0;
    while t <= x_end + x_step / 100.0 {
        let px = x(t);
        let _ = writeln!(
            s,
            r##"<line x1="{px:.1}" y1="{top}" x2="{px:.1}" y2="{:.1}" stroke="#e5e5e5"/><text x="{px:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
            top + plot_h,
            top + plot_h + 18.0,
            trim_number(t)
        );
        t += x_step;
    }
    let mut v = 0.0;
    while v <= y_end + y_step / 2.0 {
        let py = y(v);
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" y1="{py:.1}" x2="{:.1}" y2="{py:.1}" stroke="#e5e5e5"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            LEFT + plot_w,
            LEFT - 8.0,
            py + 4.0,
            trim_number(v)
        );
        v += y_step;
    }
    for (i, band) in panel.bands.iter().enumerate() {
        let (x0, x1) = (x(band.from.max(0.0)), x(band.to.min(x_end)));
        let color = BAND_COLORS[i % BAND_COLORS.len()];
        // Labels of narrow bands are staggered down so that they do not overlap.
        let _ = writeln!(
            s,
            r##"<rect x="{x0:.1}" y="{top}" width="{:.1}" height="{plot_h}" fill="{color}" fill-opacity="0.3"/><text x="{:.1}" y="{:.1}" font-size="11" fill="#444">{}</text>"##,
            (x1 - x0).max(0.0),
            x0 + 3.0,
            top + 14.0 + 14.0 * (i % 2) as f64,
            xml_escape(&band.label)
        );
    }
    let _ = writeln!(
        s,
        r#"<rect x="{LEFT}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="black"/>"#
    );
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
        LEFT + plot_w / 2.0,
        top + plot_h + 42.0,
        xml_escape(&panel.x_label)
    );
    let mid = top + plot_h / 2.0;
    let _ = writeln!(
        s,
        r#"<text x="18" y="{mid:.1}" text-anchor="middle" transform="rotate(-90 18 {mid:.1})">{}</text>"#,
        xml_escape(&panel.y_label)
    );
    for (i, series) in panel.series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let line: Vec<String> = series
            .points
            .iter()
            .map(|&(px, py)| format!("{:.1},{:.1}", x(px), y(py)))
            .collect();
        let _ = writeln!(
            s,
            r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#,
            line.join(" ")
        );
        let ly = top + 10.0 + i as f64 * 22.0;
        let lx = LEFT + plot_w + 16.0;
        let peak = series.points.iter().map(|p| p.1).fold(0.0, f64::max);
        let _ = writeln!(
            s,
            r#"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="{color}" stroke-width="3"/><text x="{}" y="{}">{} (peak {peak:.1})</text>"#,
            lx + 24.0,
            lx + 30.0,
            ly + 4.0,
            xml_escape(&series.name)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_numbers() {
        assert_eq!(tick_step(10.03), 2.0);
        assert_eq!(tick_step(23.0), 5.0);
        assert_eq!(tick_step(302.0), 50.0);
        assert_eq!(tick_step(1.6), 0.2);
        assert_eq!(trim_number(2.50), "2.5");
        assert_eq!(trim_number(10.0), "10");
    }

    #[test]
    fn panels_stack_with_a_line_and_a_legend_entry_per_series() {
        let line = |name: &str| Series::new(name, vec![(0.0, 1.0), (60.0, 3.5)]);
        let panels = [
            Panel {
                title: "first".into(),
                x_label: "minutes".into(),
                y_label: "MiB".into(),
                series: vec![line("a"), line("b")],
                bands: vec![Band::new(10.0, 20.0, "a <phase>")],
            },
            Panel {
                title: String::new(),
                x_label: "minutes".into(),
                y_label: "ms & more".into(),
                series: vec![line("c")],
                bands: Vec::new(),
            },
        ];
        let svg = svg("two <panels>", &panels, 200.0);
        assert_eq!(svg.matches("<polyline").count(), 3);
        assert!(svg.contains("a (peak 3.5)") && svg.contains("ms &amp; more"));
        assert!(svg.contains("two &lt;panels&gt;"));
        assert_eq!(svg.matches(r#"fill-opacity="0.3""#).count(), 1);
        assert!(svg.contains("a &lt;phase&gt;"));
        let height = HEAD + (PANEL_HEAD + 200.0 + BOTTOM) + (200.0 + BOTTOM);
        assert!(svg.contains(&format!(r#"height="{height}""#)));
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
    }
}
