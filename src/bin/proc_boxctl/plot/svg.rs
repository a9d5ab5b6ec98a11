//! A [`Chart`] as one self-contained SVG: no fonts, images or scripts to load, black on white,
//! 1200 px wide, and a `viewBox` so that it scales to a page. Series are told apart by dash as
//! well as colour, so a grey print still reads.
//!
//! Every text that came from a job (argv, box id, host name) goes through [`esc`]. Each panel
//! carries its scale (`data-x0`, `data-x1`, `data-t1`, `data-y0`, `data-y1`, `data-v1`: the
//! pixels of time 0 and the end, of value 0 and the top) so that a reader, a test say, can
//! turn the drawn points back into figures.

use super::series::{bytes_text, seconds_text, BandKind, Chart, MarkKind, Panel, Unit};
use std::fmt::Write;

pub const WIDTH: f64 = 1200.0;
const LEFT: f64 = 96.0;
const RIGHT: f64 = 28.0;
const PANEL_H: f64 = 150.0;
const PANEL_HEAD: f64 = 26.0;
const PANEL_GAP: f64 = 16.0;
const FONT: &str = "DejaVu Sans, Liberation Sans, Arial, Helvetica, sans-serif";
const COLOURS: [&str; 2] = ["#1f4e9c", "#c2410c"];

/// Text for XML: the five special characters as entities, and characters XML cannot hold
/// (control characters) written as visible escapes, so a hostile label is shown, never obeyed
/// and never breaks the document.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() || c == '\u{FFFE}' || c == '\u{FFFF}' => {
                out.extend(c.escape_default());
            }
            c => out.push(c),
        }
    }
    out
}

/// At most `n` characters, with `…` when cut.
pub fn cut(text: &str, n: usize) -> String {
    if text.chars().count() <= n {
        text.to_owned()
    } else {
        text.chars().take(n.saturating_sub(1)).collect::<String>() + "…"
    }
}

/// A round step near `span / n`, from 1, 2, 5 times a power of ten.
pub fn nice_step(span: f64, n: f64) -> f64 {
    let raw = (span / n).max(f64::MIN_POSITIVE);
    let p = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * p).find(|s| *s >= raw).unwrap_or(10.0 * p)
}

/// Steps for a time axis: seconds, then minutes, hours and days.
fn time_step(span: f64) -> f64 {
    const STEPS: [f64; 17] = [
        1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 7200.0, 21600.0,
        43200.0, 86400.0,
    ];
    let raw = span / 10.0;
    if raw < 1.0 {
        return nice_step(span, 10.0);
    }
    STEPS.iter().copied().find(|s| *s >= raw).unwrap_or_else(|| (raw / 86400.0).ceil() * 86400.0)
}

fn value_text(v: f64, unit: Unit, step: f64) -> String {
    match unit {
        Unit::Cores => {
            let d = if step >= 1.0 {
                0
            } else if step >= 0.1 {
                1
            } else {
                2
            };
            format!("{v:.d$}")
        }
        Unit::Count => format!("{v:.0}"),
        Unit::Bytes => bytes_text(v),
        Unit::BytesPerSecond => format!("{}/s", bytes_text(v)),
    }
}

/// Values in pixels, two decimals: enough for 1200 px, and small.
fn px(v: f64) -> String {
    let s = format!("{v:.2}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".into()
    } else {
        s.to_owned()
    }
}

/// Draws the chart.
pub fn render(c: &Chart) -> String {
    let plot_w = WIDTH - LEFT - RIGHT;
    let x = |t: f64| LEFT + (t / c.t_end).clamp(0.0, 1.0) * plot_w;

    // Event labels above the panels, in as many rows as they need not to overlap.
    let mut rows: Vec<f64> = Vec::new(); // the right end of the last label in each row
    let mut placed = Vec::new();
    let mut marks = c.marks.clone();
    marks.sort_by(|a, b| a.t.total_cmp(&b.t));
    for m in &marks {
        let w = 7.0 * m.label.chars().count() as f64 + 8.0;
        let xm = x(m.t);
        let (x0, anchor) = if xm + w > WIDTH - 4.0 { (xm - w, "end") } else { (xm, "start") };
        let row = match rows.iter().position(|r| *r < x0) {
            Some(i) => i,
            None => {
                rows.push(f64::MIN);
                rows.len() - 1
            }
        };
        rows[row] = x0 + w;
        placed.push((m, row, anchor));
    }
    let strip = 16.0 * rows.len() as f64;
    let top = 78.0 + strip;
    let panels_h = c.panels.len() as f64 * (PANEL_HEAD + PANEL_H + PANEL_GAP);
    let axis_y = top + panels_h - PANEL_GAP;
    let notes_y = axis_y + 46.0;
    let height = notes_y + if c.notes.is_empty() { 0.0 } else { 24.0 + 18.0 * c.notes.len() as f64 };

    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="{FONT}" font-size="13" role="img">"#,
        w = WIDTH,
        h = px(height)
    );
    let _ = write!(s, "<title>{}</title>", esc(&format!("{} - {}", cut(&c.title, 200), c.subtitle)));
    // On paper (or a window narrower than the chart) it scales to the width it is given,
    // instead of being cut at 1200 px.
    s += "<style>@media print, (max-width: 1199px) { svg { width: 100%; height: auto; } }</style>";
    s += r##"<defs><pattern id="gap" width="8" height="8" patternUnits="userSpaceOnUse" patternTransform="rotate(45)"><line x1="0" y1="0" x2="0" y2="8" stroke="#999" stroke-width="2"/></pattern></defs>"##;
    let _ = write!(s, r##"<rect x="0" y="0" width="{}" height="{}" fill="#fff"/>"##, WIDTH, px(height));
    let _ = write!(
        s,
        r#"<text class="title" x="{LEFT}" y="30" font-size="19" font-weight="bold">{}</text>"#,
        esc(&cut(&c.title, 105))
    );
    let _ = write!(
        s,
        r#"<text class="subtitle" x="{LEFT}" y="54" font-size="14">{}</text>"#,
        esc(&cut(&c.subtitle, 150))
    );

    for (i, p) in c.panels.iter().enumerate() {
        let y_top = top + i as f64 * (PANEL_HEAD + PANEL_H + PANEL_GAP) + PANEL_HEAD;
        panel(&mut s, c, p, y_top, &x);
    }

    // Bands and marks across every panel.
    let (y0, y1) = (top + PANEL_HEAD, axis_y);
    for b in &c.bands {
        let (fill, class) = match b.kind {
            BandKind::Suspended => ("#9ca3af", "suspended"),
            BandKind::Gap => ("url(#gap)", "gap"),
        };
        let _ = write!(
            s,
            r#"<rect class="band {class}" x="{}" y="{}" width="{}" height="{}" fill="{fill}" fill-opacity="0.35"/>"#,
            px(x(b.t0)),
            px(y0),
            px((x(b.t1) - x(b.t0)).max(1.0)),
            px(y1 - y0)
        );
    }
    for (m, row, anchor) in &placed {
        let xm = px(x(m.t));
        let (colour, dash) = match m.kind {
            MarkKind::Suspend | MarkKind::Resume => ("#4b5563", "2 3"),
            MarkKind::Stop => ("#b91c1c", "6 3"),
            MarkKind::Reset => ("#7c3aed", "1 2"),
            MarkKind::End => ("#111", ""),
        };
        let kind = format!("{:?}", m.kind).to_lowercase();
        let ty = 74.0 + 16.0 * *row as f64;
        let _ = write!(
            s,
            r#"<g class="mark" data-kind="{kind}"><line x1="{xm}" y1="{}" x2="{xm}" y2="{}" stroke="{colour}" stroke-width="1.5" stroke-dasharray="{dash}"/><text x="{}" y="{}" text-anchor="{anchor}" font-size="12" fill="{colour}">{}</text></g>"#,
            px(ty + 3.0),
            px(y1),
            if *anchor == "end" { px(x(m.t) - 3.0) } else { px(x(m.t) + 3.0) },
            px(ty),
            esc(&m.label)
        );
    }

    // The time axis, under the last panel.
    let step = time_step(c.t_end);
    s += r#"<g class="axis-x">"#;
    let ticks = ((c.t_end / step) * 1.0001).floor().clamp(0.0, 40.0) as usize;
    for t in (0..=ticks).map(|i| i as f64 * step) {
        let label = if step < 1.0 { format!("{t:.1} s") } else { seconds_text(t) };
        let _ = write!(
            s,
            r#"<text x="{}" y="{}" text-anchor="middle" font-size="12">{}</text>"#,
            px(x(t)),
            px(axis_y + 18.0),
            esc(&label)
        );
    }
    let start =
        c.start.map(|u| format!(" after the start ({} UTC)", super::series::utc_text(u))).unwrap_or_default();
    let _ = write!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle" font-size="13">{}</text></g>"#,
        px(LEFT + plot_w / 2.0),
        px(axis_y + 36.0),
        esc(&format!("time{start}"))
    );

    if !c.notes.is_empty() {
        let _ = write!(
            s,
            r#"<g class="notes"><text x="{LEFT}" y="{}" font-weight="bold">What is missing or approximate</text>"#,
            px(notes_y)
        );
        for (i, n) in c.notes.iter().enumerate() {
            let _ = write!(
                s,
                r#"<text class="note" x="{LEFT}" y="{}">• {}</text>"#,
                px(notes_y + 20.0 + 18.0 * i as f64),
                esc(&cut(n, 160))
            );
        }
        s += "</g>";
    }
    s += "</svg>\n";
    s
}

fn panel(s: &mut String, c: &Chart, p: &Panel, y_top: f64, x: &dyn Fn(f64) -> f64) {
    let top_value = p
        .series
        .iter()
        .flat_map(|s| s.segments.iter().flatten().map(|q| q.1))
        .chain(p.levels.iter().map(|l| l.value))
        .filter(|v| v.is_finite())
        .fold(0.0, f64::max)
        // A hostile 1e308 would round the top up to infinity, and the grid below would never
        // reach it; no real counter comes near this.
        .min(f64::MAX / 16.0);
    let step = match p.unit {
        Unit::Count => nice_step(top_value.max(1.0), 4.0).max(1.0),
        Unit::Cores => nice_step(top_value.max(0.1), 4.0),
        // Bytes: round steps in the unit the labels use (KiB, MiB…), not in powers of ten.
        _ => {
            let top = top_value.max(1024.0);
            let unit = 1024f64.powf(top.log(1024.0).floor());
            nice_step(top / unit, 4.0) * unit
        }
    };
    let vmax = ((top_value / step).ceil() * step).max(step);
    let y_bottom = y_top + PANEL_H;
    let y = |v: f64| y_bottom - (v / vmax).clamp(0.0, 1.05) * PANEL_H;
    let _ = write!(
        s,
        r#"<g class="panel" data-panel="{}" data-x0="{}" data-x1="{}" data-t1="{}" data-y0="{}" data-y1="{}" data-v1="{}">"#,
        p.key,
        px(x(0.0)),
        px(x(c.t_end)),
        c.t_end,
        px(y_bottom),
        px(y_top),
        vmax
    );
    let _ = write!(
        s,
        r#"<text x="{LEFT}" y="{}" font-size="15" font-weight="bold">{}</text>"#,
        px(y_top - 8.0),
        esc(p.title)
    );
    // Legend, right-aligned over the panel (text widths are estimated: no font is measured).
    let mut lx = WIDTH - RIGHT;
    for (i, se) in p.series.iter().enumerate().rev() {
        let _ = write!(
            s,
            r#"<text x="{}" y="{}" text-anchor="end" font-size="13">{}</text>"#,
            px(lx),
            px(y_top - 8.0),
            esc(se.label)
        );
        lx -= 7.2 * se.label.chars().count() as f64 + 36.0;
        let _ = write!(
            s,
            r#"<line x1="{}" y1="{}" x2="{}" y2="{}" stroke="{}" stroke-width="2.5" stroke-dasharray="{}"/>"#,
            px(lx),
            px(y_top - 12.0),
            px(lx + 28.0),
            px(y_top - 12.0),
            COLOURS[i % 2],
            if se.dashed { "7 4" } else { "" }
        );
        lx -= 18.0;
    }
    let _ = write!(
        s,
        r##"<rect x="{LEFT}" y="{}" width="{}" height="{PANEL_H}" fill="none" stroke="#333" stroke-width="1"/>"##,
        px(y_top),
        px(x(c.t_end) - LEFT)
    );
    // Grid and value labels.
    // Counted, not summed up to vmax: a step lost in the rounding of a huge value can never
    // loop for ever.
    let lines = ((vmax / step) * 1.0001).floor().clamp(0.0, 20.0) as usize;
    for v in (0..=lines).map(|i| i as f64 * step) {
        let yy = px(y(v));
        let _ = write!(
            s,
            r##"<line x1="{LEFT}" y1="{yy}" x2="{}" y2="{yy}" stroke="#ddd" stroke-width="1"/><text x="{}" y="{}" text-anchor="end" font-size="12">{}</text>"##,
            px(x(c.t_end)),
            px(LEFT - 6.0),
            px(y(v) + 4.0),
            esc(&value_text(v, p.unit, step))
        );
    }
    for l in &p.levels {
        let yy = px(y(l.value));
        let _ = write!(
            s,
            r##"<g class="level"><line x1="{LEFT}" y1="{yy}" x2="{}" y2="{yy}" stroke="#555" stroke-width="1" stroke-dasharray="2 2"/><text x="{}" y="{}" text-anchor="end" font-size="11" fill="#333">{}</text></g>"##,
            px(x(c.t_end)),
            px(x(c.t_end) - 4.0),
            px(y(l.value) - 3.0),
            esc(&format!("{} {}", l.label, value_text(l.value, p.unit, step / 100.0)))
        );
    }
    let mut any = false;
    for (i, se) in p.series.iter().enumerate() {
        for seg in &se.segments {
            any = true;
            let pts: Vec<String> = seg.iter().map(|(t, v)| format!("{},{}", px(x(*t)), px(y(*v)))).collect();
            let _ = write!(
                s,
                r#"<polyline class="series" data-series="{}" fill="none" stroke="{}" stroke-width="2" stroke-linejoin="round" stroke-dasharray="{}" points="{}"/>"#,
                se.key,
                COLOURS[i % 2],
                if se.dashed { "7 4" } else { "" },
                pts.join(" ")
            );
            if seg.len() == 1 {
                let _ = write!(
                    s,
                    r#"<circle class="point" data-series="{}" cx="{}" cy="{}" r="3.5" fill="{}"/>"#,
                    se.key,
                    px(x(seg[0].0)),
                    px(y(seg[0].1)),
                    COLOURS[i % 2]
                );
            }
        }
    }
    if !any {
        let _ = write!(
            s,
            r##"<text class="empty" x="{}" y="{}" text-anchor="middle" font-size="14" fill="#555">no samples to draw</text>"##,
            px(LEFT + (x(c.t_end) - LEFT) / 2.0),
            px(y_top + PANEL_H / 2.0)
        );
    }
    s.push_str("</g>");
}

/// A small chart of CPU cores over the job (160 × 36), for a row of a table.
pub fn spark(c: &Chart) -> String {
    let (w, h) = (160.0, 36.0);
    let series = c.panels.first().and_then(|p| p.series.first());
    let top =
        series.map(|s| s.segments.iter().flatten().map(|q| q.1).fold(0.0, f64::max)).unwrap_or(0.0).max(0.01);
    let x = |t: f64| 1.0 + (t / c.t_end).clamp(0.0, 1.0) * (w - 2.0);
    let y = |v: f64| h - 2.0 - (v / top).clamp(0.0, 1.0) * (h - 4.0);
    let mut s = format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" class="spark" viewBox="0 0 {w} {h}" width="{w}" height="{h}"><title>{}</title><rect x="0" y="0" width="{w}" height="{h}" fill="#f8f9fa" stroke="#ccc"/>"##,
        esc(&format!("CPU cores over {}; at most {top:.2}", seconds_text(c.t_end)))
    );
    for b in c.bands.iter().filter(|b| b.kind == BandKind::Suspended) {
        let _ = write!(
            s,
            r##"<rect x="{}" y="0" width="{}" height="{h}" fill="#9ca3af" fill-opacity="0.4"/>"##,
            px(x(b.t0)),
            px((x(b.t1) - x(b.t0)).max(1.0))
        );
    }
    for seg in series.map(|s| s.segments.as_slice()).unwrap_or_default() {
        let pts: Vec<String> = seg.iter().map(|(t, v)| format!("{},{}", px(x(*t)), px(y(*v)))).collect();
        let _ = write!(
            s,
            r#"<polyline fill="none" stroke="{}" stroke-width="1.5" points="{}"/>"#,
            COLOURS[0],
            pts.join(" ")
        );
    }
    s += "</svg>";
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_what_xml_cannot_hold() {
        assert_eq!(esc("<script>&\"'"), "&lt;script&gt;&amp;&quot;&#39;");
        assert_eq!(esc("a\u{1}b\nc"), "a\\u{1}b\\nc");
    }

    #[test]
    fn steps_are_round() {
        assert_eq!(nice_step(10.0, 4.0), 5.0);
        assert_eq!(nice_step(0.3, 4.0), 0.1);
        assert_eq!(time_step(600.0), 60.0);
        assert_eq!(time_step(2.0), 0.2);
    }
}
