//! `report --format html`: the bill as one page a person can read, mail and print.
//!
//! One self-contained file: inline CSS and SVG, no script, nothing loaded from anywhere. It is
//! also well-formed XML (XHTML-compatible), so that it can be checked by an XML parser. Every
//! text that came from a job (labels, host names, users, box ids, reasons) goes through
//! [`esc`]: a label named `<script>…` is shown as text. The totals table is built from the very
//! rows the CSV report writes (`report::rows`), so the figures agree to the digit.

use super::rates::{format_units, RateCard};
use super::report::{self, Key, Report, COLUMNS};
use super::store::Job;
use crate::plot::svg::{cut, esc};
use std::collections::BTreeMap;
use std::fmt::Write;

const HOUR_US: f64 = 3_600_000_000.0;
const GIB: f64 = (1u64 << 30) as f64;
/// Okabe-Ito: told apart by people with colour blindness, and distinct in grey print.
const PALETTE: [&str; 8] =
    ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#999999"];
/// The top jobs listed.
pub const TOP_JOBS: usize = 20;
/// Groups stacked in the chart over time; the rest are summed as `other`.
const STACKED: usize = 7;

/// The time buckets of the chart over time.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Every {
    Day,
    Week,
    Month,
}

impl std::str::FromStr for Every {
    type Err = String;
    fn from_str(s: &str) -> Result<Every, String> {
        match s {
            "day" => Ok(Every::Day),
            "week" => Ok(Every::Week),
            "month" => Ok(Every::Month),
            _ => Err(format!("'{s}': use day, week or month")),
        }
    }
}

impl Every {
    /// Days for a period up to 45 days, weeks up to a year, months beyond.
    pub fn auto(jobs: &[Job]) -> Every {
        let (lo, hi) =
            jobs.iter().fold((i64::MAX, i64::MIN), |(lo, hi), j| (lo.min(j.ended_us), hi.max(j.ended_us)));
        let days = (hi.saturating_sub(lo)) / 86_400_000_000;
        if jobs.is_empty() || days <= 45 {
            Every::Day
        } else if days <= 366 {
            Every::Week
        } else {
            Every::Month
        }
    }
    fn key(self) -> Key {
        match self {
            Every::Day => Key::Day,
            Every::Week => Key::Week,
            Every::Month => Key::Month,
        }
    }
    fn name(self) -> &'static str {
        match self {
            Every::Day => "day",
            Every::Week => "week",
            Every::Month => "month",
        }
    }
}

/// A job's small chart, where the ledger kept its samples.
pub type Spark<'a> = &'a dyn Fn(&Job) -> Option<String>;

pub struct Input<'a> {
    pub report: &'a Report,
    pub jobs: &'a [Job],
    pub card: Option<&'a RateCard>,
    pub since: Option<i64>,
    pub until: Option<i64>,
    pub every: Every,
    pub spark: Spark<'a>,
}

const CSS: &str = r#"
body { font-family: "DejaVu Sans", "Liberation Sans", Arial, Helvetica, sans-serif; color: #111; background: #fff; margin: 24px auto; max-width: 1100px; padding: 0 16px; font-size: 14px; }
h1 { font-size: 22px; margin: 0 0 4px; }
h2 { font-size: 17px; margin: 28px 0 8px; border-bottom: 1px solid #ccc; padding-bottom: 3px; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: 2px 14px; margin: 8px 0; }
dl.facts dt { font-weight: bold; }
dl.facts dd { margin: 0; }
table { border-collapse: collapse; width: 100%; font-variant-numeric: tabular-nums; }
th, td { border-bottom: 1px solid #ddd; padding: 3px 6px; text-align: right; vertical-align: top; }
th { background: #f1f3f5; font-weight: bold; }
th.key, td.key { text-align: left; overflow-wrap: anywhere; min-width: 5.5em; }
td.nowrap { white-space: nowrap; }
tr.subtotal td { background: #f8f9fa; font-style: italic; }
tr.total td { font-weight: bold; border-top: 2px solid #333; }
.swatch { display: inline-block; width: 11px; height: 11px; margin-right: 4px; vertical-align: -1px; border: 1px solid #333; }
ul.legend { list-style: none; padding: 0; margin: 6px 0; columns: 3; }
ul.legend li { overflow-wrap: anywhere; }
.note { color: #444; font-size: 13px; }
svg { max-width: 100%; height: auto; }
td svg { width: 160px; height: 36px; }
@page { margin: 12mm; }
/* A page (A4 is 186 mm = 703 px wide inside 12 mm margins, letter 725 px) and a narrow screen
   get the same compact layout, so what fits a narrow window fits the paper. */
@media print, (max-width: 760px) {
  body { margin: 0; max-width: none; padding: 0; font-size: 8.5pt; }
  h1 { font-size: 14pt; }
  h2 { font-size: 11pt; }
  th, td { padding: 2px 3px; }
  th.key, td.key { min-width: 3.5em; }
  ul.legend { columns: 2; }
  td svg { width: 96px; height: 22px; }
}
@media print {
  h2 { break-after: avoid; }
  thead { display: table-header-group; }
  tr { break-inside: avoid; }
  section.chart { break-inside: avoid; }
  th { background: #eee; -webkit-print-color-adjust: exact; print-color-adjust: exact; }
  .swatch, svg { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
}
"#;

fn heading(c: &str) -> String {
    c.replace('_', " ")
}

/// Renders the page.
pub fn render(i: &Input) -> String {
    let r = i.report;
    let by = r.keys.iter().map(Key::name).collect::<Vec<_>>().join(", ");
    let what = if i.card.is_some() { "Usage and cost" } else { "Usage" };
    let title = if by.is_empty() { what.to_owned() } else { format!("{what} by {by}") };
    let (from, to) = (
        i.since.map_or("the first job".into(), |t| report::time_text(Some(t))),
        i.until.map_or("now".into(), |t| report::time_text(Some(t))),
    );
    let mut h = String::new();
    h += "<!DOCTYPE html>\n<html xmlns=\"http://www.w3.org/1999/xhtml\" lang=\"en\">\n<head>\n<meta charset=\"utf-8\"/>\n";
    h += "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"/>\n";
    let _ = writeln!(h, "<title>{}</title>", esc(&format!("{title}: {from} - {to}")));
    let _ = writeln!(h, "<style>{CSS}</style>\n</head>\n<body>");
    let _ = writeln!(h, "<h1>{}</h1>", esc(&title));

    // Period, units, rate card.
    h += "<section id=\"period\"><dl class=\"facts\">";
    let _ =
        write!(h, "<dt>Period</dt><dd>{} to {} (UTC; a job counts when it ended)</dd>", esc(&from), esc(&to));
    let _ = write!(h, "<dt>Jobs</dt><dd>{}</dd>", r.total.jobs);
    h += "<dt>Units</dt><dd>time in hours; memory in GiB of peak PSS; GiB-hours = peak PSS × wall; I/O in GiB; cpu efficiency = CPU hours / wall hours (cores kept busy)";
    if let Some(c) = i.card {
        let _ = write!(
            h,
            "; cost in {} (each job rounded half-even to 10<sup>-{}</sup>, then summed)",
            esc(&c.currency),
            c.decimals
        );
    }
    h += "</dd>";
    match i.card {
        Some(c) => {
            h += "<dt>Rate card</dt><dd><table id=\"rates\"><thead><tr><th class=\"key\">from</th><th>CPU hour</th><th>GiB-hour</th><th>job</th><th>minimum</th></tr></thead><tbody>";
            for (from, p) in &c.periods {
                let price = |n: i128| {
                    let s = format_units(n, 9);
                    let s = s.trim_end_matches('0');
                    esc(&format!("{} {}", s.strip_suffix('.').unwrap_or(s), c.currency))
                };
                let since = if *from <= i64::MIN / 2 {
                    "the start".to_owned()
                } else {
                    report::time_text(Some(*from))
                };
                let _ = write!(
                    h,
                    "<tr><td class=\"key\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    esc(&since),
                    price(p.cpu_hour),
                    price(p.gib_hour),
                    price(p.job),
                    price(p.minimum)
                );
            }
            h += "</tbody></table>";
            for m in &c.multipliers {
                let f = format_units(m.factor, 9);
                let f = f.trim_end_matches('0');
                let _ = write!(
                    h,
                    "<p class=\"note\">hosts matching <code>{}</code>: × {}</p>",
                    esc(&m.pattern),
                    esc(f.strip_suffix('.').unwrap_or(f))
                );
            }
            h += "</dd>";
        }
        None => h += "<dt>Rate card</dt><dd>none (no --rates): usage only</dd>",
    }
    h += "</dl></section>\n";

    totals(&mut h, i);
    over_time(&mut h, i);
    top_jobs(&mut h, i);
    efficiency(&mut h, i);
    if !r.unpriced.is_empty() {
        h += "<section id=\"unpriced\"><h2>Not priced</h2><ul>";
        for u in &r.unpriced {
            let _ = write!(h, "<li>{}</li>", esc(u));
        }
        h += "</ul></section>\n";
    }
    let _ = writeln!(
        h,
        "<p class=\"note\">Made by proc_boxctl {} from the ledger.</p>\n</body>\n</html>",
        env!("CARGO_PKG_VERSION")
    );
    h
}

fn totals(h: &mut String, i: &Input) {
    let r = i.report;
    let mut header: Vec<String> =
        if r.keys.is_empty() { vec!["group".into()] } else { r.keys.iter().map(Key::name).collect() };
    let nkeys = header.len();
    header.extend(COLUMNS.iter().map(|c| c.to_string()));
    if let Some(c) = i.card {
        header.push(format!("cost_{}", c.currency));
    }
    *h += "<section id=\"totals\"><h2>Totals</h2><table id=\"totals-table\"><thead><tr>";
    for (n, c) in header.iter().enumerate() {
        let class = if n < nkeys { " class=\"key\"" } else { "" };
        let _ = write!(h, "<th{class} data-col=\"{}\">{}</th>", esc(c), esc(&heading(c)));
    }
    *h += "</tr></thead><tbody>";
    for (kind, vals, s) in report::rows(r) {
        let _ = write!(h, "<tr class=\"{kind}\">");
        // A key is cut to 200 characters: a job's label may be a megabyte, which would make the
        // page hundreds of printed pages; the CSV report keeps it whole.
        for v in &vals {
            let _ = write!(h, "<td class=\"key\">{}</td>", esc(&cut(v, 200)));
        }
        // Shown with two decimals, as the table report; the six of the CSV ride along.
        let exact = s.cells(i.card, 6);
        for (n, shown) in s.cells(i.card, 2).iter().enumerate() {
            let _ = write!(
                h,
                "<td data-col=\"{}\" data-value=\"{}\">{}</td>",
                esc(&header[nkeys + n]),
                esc(&exact[n]),
                esc(shown)
            );
        }
        *h += "</tr>";
    }
    *h += "</tbody></table></section>\n";
}

/// Cost (minor units) or CPU µs of one job, for the chart and the top list.
fn measure(j: &Job, card: Option<&RateCard>) -> i128 {
    match card {
        Some(c) => c.cost(j).unwrap_or(0),
        None => i128::from(j.cpu_user_us) + i128::from(j.cpu_sys_us),
    }
}

fn measure_text(v: i128, card: Option<&RateCard>) -> String {
    match card {
        Some(c) => c.format(v),
        None => format!("{:.2}", v as f64 / HOUR_US),
    }
}

fn over_time(h: &mut String, i: &Input) {
    let group_key = i.report.keys.first().cloned();
    let bucket_key = i.every.key();
    // Totals per group, to keep the largest and sum the rest as "other".
    let mut per_group: BTreeMap<String, i128> = BTreeMap::new();
    let mut cells: BTreeMap<(String, String), i128> = BTreeMap::new();
    for j in i.jobs {
        let labels = match &group_key {
            Some(Key::Label(_)) => serde_json::from_str(&j.labels).ok(),
            _ => None,
        };
        let g = group_key.as_ref().map_or_else(|| "all jobs".to_owned(), |k| k.value(j, &labels));
        let b = bucket_key.value(j, &None);
        let m = measure(j, i.card);
        *per_group.entry(g.clone()).or_default() += m;
        *cells.entry((b, g)).or_default() += m;
    }
    let mut order: Vec<(String, i128)> = per_group.into_iter().collect();
    order.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let shown: Vec<String> = order.iter().take(STACKED).map(|g| g.0.clone()).collect();
    let has_other = order.len() > STACKED;
    let mut buckets: BTreeMap<String, Vec<i128>> = BTreeMap::new();
    for ((b, g), m) in cells {
        let slot = shown.iter().position(|s| *s == g).unwrap_or(STACKED);
        buckets.entry(b).or_insert_with(|| vec![0; STACKED + 1])[slot] += m;
    }
    let what = match i.card {
        Some(c) => format!("Cost ({})", c.currency),
        None => "CPU hours".to_owned(),
    };
    let per = group_key.as_ref().map_or(String::new(), |k| format!(" per {}", k.name()));
    let _ = write!(
        h,
        "<section id=\"over-time\" class=\"chart\"><h2>{} by {}</h2>",
        esc(&format!("{what}{per}")),
        i.every.name()
    );
    if buckets.is_empty() {
        *h += "<p class=\"note\">No jobs in the period.</p></section>\n";
        return;
    }
    let (w, ht, left, bottom, top) = (960.0, 300.0, 78.0, 40.0, 12.0);
    let max = buckets.values().map(|v| v.iter().sum::<i128>()).max().unwrap_or(0);
    if max == 0 {
        let _ = writeln!(h, "<p class=\"note\">Every value is 0 in this period (after rounding): no bar to draw.</p></section>");
        return;
    }
    let to_f = |v: i128| match i.card {
        Some(c) => v as f64 / 10f64.powi(c.decimals as i32),
        None => v as f64 / HOUR_US,
    };
    let vmax_raw = to_f(max);
    let step = crate::plot::svg::nice_step(vmax_raw, 4.0);
    let vmax = (vmax_raw / step).ceil() * step;
    let plot_h = ht - bottom - top;
    let y = |v: f64| top + plot_h - v / vmax * plot_h;
    let n = buckets.len() as f64;
    let slot = (w - left - 10.0) / n;
    let bar = (slot * 0.7).clamp(1.0, 60.0);
    let _ = write!(
        h,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {w} {ht}\" width=\"{w}\" height=\"{ht}\" font-size=\"12\" font-family=\"DejaVu Sans, Arial, sans-serif\" role=\"img\"><title>{}</title>",
        esc(&format!("{what}{per} by {}", i.every.name()))
    );
    let mut v = 0.0;
    while v <= vmax * 1.0001 {
        let _ = write!(
            h,
            "<line x1=\"{left}\" y1=\"{y:.1}\" x2=\"{w}\" y2=\"{y:.1}\" stroke=\"#ddd\"/><text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            left - 6.0,
            y(v) + 4.0,
            esc(&format!("{v}")),
            y = y(v)
        );
        v += step;
    }
    let label_every = (n / 12.0).ceil().max(1.0) as usize;
    for (k, (b, vals)) in buckets.iter().enumerate() {
        let x = left + 5.0 + k as f64 * slot + (slot - bar) / 2.0;
        let mut acc = 0.0;
        for (s, val) in vals.iter().enumerate() {
            if *val == 0 {
                continue;
            }
            let f = to_f(*val);
            let (y1, y0) = (y(acc + f), y(acc));
            let name = if s < STACKED { shown[s].clone() } else { "other".into() };
            let _ = write!(
                h,
                "<rect class=\"bar\" x=\"{x:.1}\" y=\"{y1:.2}\" width=\"{bar:.1}\" height=\"{:.2}\" fill=\"{}\" stroke=\"#333\" stroke-width=\"0.5\"><title>{}</title></rect>",
                (y0 - y1).max(0.0),
                PALETTE[s.min(PALETTE.len() - 1)],
                esc(&format!("{b} · {}: {}", cut(&name, 200), measure_text(*val, i.card)))
            );
            acc += f;
        }
        if k % label_every == 0 {
            let _ = write!(
                h,
                "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
                x + bar / 2.0,
                ht - bottom + 16.0,
                esc(b)
            );
        }
    }
    let _ = write!(
        h,
        "<line x1=\"{left}\" y1=\"{:.1}\" x2=\"{w}\" y2=\"{:.1}\" stroke=\"#333\"/></svg>",
        y(0.0),
        y(0.0)
    );
    *h += "<ul class=\"legend\">";
    for (s, name) in shown.iter().enumerate() {
        let _ = write!(
            h,
            "<li><span class=\"swatch\" style=\"background:{}\"></span>{}</li>",
            PALETTE[s],
            esc(&cut(name, 60))
        );
    }
    if has_other {
        let _ = write!(
            h,
            "<li><span class=\"swatch\" style=\"background:{}\"></span>other ({} groups)</li>",
            PALETTE[STACKED],
            order.len() - STACKED
        );
    }
    *h += "</ul></section>\n";
}

fn top_jobs(h: &mut String, i: &Input) {
    let mut jobs: Vec<(&Job, i128)> = i.jobs.iter().map(|j| (j, measure(j, i.card))).collect();
    jobs.sort_by(|a, b| b.1.cmp(&a.1).then(b.0.ended_us.cmp(&a.0.ended_us)));
    let by = if i.card.is_some() { "cost" } else { "CPU hours" };
    let _ = write!(h, "<section id=\"top-jobs\"><h2>Top {TOP_JOBS} jobs by {by}</h2>");
    if jobs.is_empty() {
        *h += "<p class=\"note\">No jobs in the period.</p></section>\n";
        return;
    }
    *h += "<table id=\"top-jobs-table\"><thead><tr><th>#</th><th class=\"key\">box</th><th class=\"key\">user</th><th class=\"key\">host</th><th class=\"key\">ended</th><th>wall hours</th><th>cpu hours</th><th>cores busy</th><th>peak PSS GiB</th><th class=\"key\">reason</th><th>exit</th>";
    if let Some(c) = i.card {
        let _ = write!(h, "<th>cost {}</th>", esc(&c.currency));
    }
    *h += "<th class=\"key\">CPU over time</th></tr></thead><tbody>";
    let mut sparks = 0;
    for (n, (j, m)) in jobs.iter().take(TOP_JOBS).enumerate() {
        let cpu = (j.cpu_user_us + j.cpu_sys_us) as f64;
        let eff = if j.wall_us > 0 { cpu / j.wall_us as f64 } else { 0.0 };
        let _ = write!(
            h,
            "<tr><td>{}</td><td class=\"key\">{}</td><td class=\"key\">{}</td><td class=\"key\">{}</td><td class=\"key\">{}</td><td>{:.2}</td><td>{:.2}</td><td>{:.2}</td><td>{:.2}</td><td class=\"key nowrap\">{}</td><td>{}</td>",
            n + 1,
            esc(&cut(&j.box_id, 40)),
            esc(&cut(&report::user(j).unwrap_or_else(|| "-".into()), 30)),
            esc(&cut(&j.host, 30)),
            esc(&j.ended_at.chars().take(19).collect::<String>().replace('T', " ")),
            j.wall_us as f64 / HOUR_US,
            cpu / HOUR_US,
            eff,
            j.peak_pss_bytes as f64 / GIB,
            esc(&j.reason),
            j.exit_code
        );
        if i.card.is_some() {
            let _ = write!(h, "<td>{}</td>", esc(&measure_text(*m, i.card)));
        }
        match (i.spark)(j) {
            Some(svg) => {
                sparks += 1;
                let _ = write!(h, "<td class=\"key\">{svg}</td>");
            }
            None => *h += "<td class=\"key note\">no samples kept</td>",
        }
        *h += "</tr>";
    }
    *h += "</tbody></table>";
    if sparks == 0 {
        *h += "<p class=\"note\">Small charts need the samples, which the ledger keeps with <code>ledger run --samples</code>.</p>";
    }
    *h += "</section>\n";
}

/// Bands of average cores kept busy (CPU hours / wall hours).
const BANDS: [(f64, &str); 8] = [
    (0.1, "under 0.1"),
    (0.25, "0.1 - 0.25"),
    (0.5, "0.25 - 0.5"),
    (0.75, "0.5 - 0.75"),
    (1.0, "0.75 - 1"),
    (2.0, "1 - 2"),
    (4.0, "2 - 4"),
    (f64::INFINITY, "4 and more"),
];

fn efficiency(h: &mut String, i: &Input) {
    let mut counts = vec![(0u64, 0i128, 0i128); BANDS.len()];
    for j in i.jobs.iter().filter(|j| j.wall_us > 0) {
        let cpu = i128::from(j.cpu_user_us) + i128::from(j.cpu_sys_us);
        let eff = cpu as f64 / j.wall_us as f64;
        let b = BANDS.iter().position(|(hi, _)| eff < *hi).unwrap_or(BANDS.len() - 1);
        counts[b].0 += 1;
        counts[b].1 += i128::from(j.wall_us);
        counts[b].2 += cpu;
    }
    *h += "<section id=\"efficiency\" class=\"chart\"><h2>CPU efficiency: cores kept busy per job</h2>";
    *h += "<p class=\"note\">Each job's CPU hours over its wall hours: the cores it kept busy on average. The summary does not say how many cores a job held, so a job in the low bands held at least one core mostly idle, and one that held more cores wasted more.</p>";
    let max_wall = counts.iter().map(|c| c.1).max().unwrap_or(0).max(1) as f64;
    let (w, row, left) = (960.0, 24.0, 110.0);
    let ht = row * BANDS.len() as f64 + 10.0;
    let _ = write!(
        h,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {w} {ht}\" width=\"{w}\" height=\"{ht}\" font-size=\"12\" font-family=\"DejaVu Sans, Arial, sans-serif\" role=\"img\"><title>wall hours by cores kept busy</title>"
    );
    for (b, (_, name)) in BANDS.iter().enumerate() {
        let y = 5.0 + b as f64 * row;
        let len = counts[b].1 as f64 / max_wall * (w - left - 260.0);
        let colour = if b < 3 { "#D55E00" } else { "#0072B2" };
        let _ = write!(
            h,
            "<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{name}</text><rect class=\"band\" x=\"{left}\" y=\"{:.1}\" width=\"{len:.1}\" height=\"{:.1}\" fill=\"{colour}\"/><text x=\"{:.1}\" y=\"{:.1}\">{} jobs, {:.2} wall hours, {:.2} CPU hours</text>",
            left - 8.0,
            y + 15.0,
            y + 3.0,
            row - 6.0,
            left + len + 6.0,
            y + 15.0,
            counts[b].0,
            counts[b].1 as f64 / HOUR_US,
            counts[b].2 as f64 / HOUR_US
        );
    }
    *h += "</svg>";
    let idle: (u64, i128, i128) =
        counts[..3].iter().fold((0, 0, 0), |a, c| (a.0 + c.0, a.1 + c.1, a.2 + c.2));
    let _ = writeln!(
        h,
        "<p id=\"idle\">Jobs that kept under half a core busy: <b>{}</b>, over <b>{:.2}</b> wall hours, using <b>{:.2}</b> CPU hours.</p></section>",
        idle.0,
        idle.1 as f64 / HOUR_US,
        idle.2 as f64 / HOUR_US
    );
}
