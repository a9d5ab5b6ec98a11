//! `proc_boxctl report --format html`: one self-contained page whose totals are the CSV
//! report's, with hostile text from jobs shown as text.

use crate::common::Scene;
use crate::plot::ctl;
use serde_json::json;
use std::path::{Path, PathBuf};

/// What a job put in its labels and host name to attack the page.
pub const HOSTILE: &str = "<script>document.body.setAttribute('data-pwned','1')</script>";
pub const HOSTILE_IMG: &str = "<img src=x onerror=\"document.body.setAttribute('data-pwned','2')\">";

pub const RATES: &str = "currency = \"EUR\"\ncpu_hour = 0.031\ngib_hour = 0.004\njob = 0.01\n\n[[host]]\npattern = \"gpu*\"\nmultiplier = 2.5\n";

/// 30 jobs over three weeks, four accounts (one of them hostile), hosts, reasons and figures
/// varied by a fixed rule; one host and one label hostile too.
pub fn ledger(scene: &Scene) -> (String, PathBuf) {
    let accounts = ["phys", "chem", HOSTILE, "bio"];
    let users = ["ann", "bob", HOSTILE_IMG];
    let mut lines = String::new();
    for n in 0..30u64 {
        let account = accounts[(n % 4) as usize];
        let user = users[(n % 3) as usize];
        let host = if n == 7 {
            HOSTILE.to_owned()
        } else if n % 5 == 0 {
            format!("gpu{n}")
        } else {
            format!("node{}", n % 3)
        };
        let wall = 600.0 + 977.0 * n as f64;
        let cores = [0.05, 0.3, 0.9, 1.7, 3.5][(n % 5) as usize];
        let day = 1 + (n % 21);
        let ended = format!("2026-11-{day:02}T{:02}:00:00.000000Z", n % 24);
        let reason = ["exited", "timeout", "limit_memory"][(n % 3) as usize];
        let s = json!({"type": "summary", "schema": 1, "message_id": format!("html-{n}"),
            "box_id": format!("job-{n}"), "hostname": host, "argv": ["sim", "--step", n.to_string()],
            "started_at": ended, "ended_at": ended, "wall_seconds": wall, "exit_code": if reason == "exited" { 0 } else { 124 },
            "exit": {"kind": "exited", "code": 0, "signal": null}, "reason": reason,
            "cpu_user_seconds": wall * cores * 0.9, "cpu_system_seconds": wall * cores * 0.1,
            "peak_rss_bytes": (n + 1) << 27, "peak_pss_bytes": (n + 1) << 27, "max_process_rss_bytes": 1,
            "processes_started": n + 1, "processes_peak": 1, "leftover_killed": 0,
            "io_read_bytes": n << 25, "io_write_bytes": n << 24, "stdout_bytes": 0, "stderr_bytes": 0,
            "samples_emitted": 0, "samples_dropped": 0, "user": {"project": HOSTILE},
            "owner": {"uid": 1000, "user": "owner"},
            "scheduler": {"name": "slurm", "job_id": n.to_string(), "account": account, "partition": "batch", "user": user}});
        lines += &format!("{s}\n");
    }
    let file = scene.dir.join("jobs.jsonl");
    std::fs::write(&file, lines).unwrap();
    let db = format!("sqlite:{}", scene.dir.join("ledger.sqlite").display());
    let o = ctl().args(["ledger", "import", "--db", &db]).arg(&file).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let rates = scene.dir.join("rates.toml");
    std::fs::write(&rates, RATES).unwrap();
    (db, rates)
}

pub fn report(db: &str, rates: &Path, format: &str) -> String {
    let o = ctl()
        .args([
            "report",
            "--db",
            db,
            "--by",
            "account,user",
            "--since",
            "2026-11-01",
            "--until",
            "2026-12-01",
        ])
        .arg("--rates")
        .arg(rates)
        .args(["--format", format])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap()
}

/// The CSV report's total row: column name → cell.
pub fn csv_total(csv: &str) -> Vec<(String, String)> {
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let total = lines.find(|l| l.starts_with("total,")).unwrap();
    header.iter().zip(total.split(',')).map(|(h, v)| (h.to_string(), v.to_string())).collect()
}

#[test]
fn the_page_parses_holds_the_csv_totals_and_shows_hostile_text_as_text() {
    let scene = Scene::new("html-report");
    let (db, rates) = ledger(&scene);
    let html = report(&db, &rates, "html");
    let csv = report(&db, &rates, "csv");
    std::fs::write(scene.dir.join("report.html"), &html).unwrap();

    let doc = roxmltree::Document::parse_with_options(
        &html,
        roxmltree::ParsingOptions { allow_dtd: true, ..Default::default() },
    )
    .unwrap_or_else(|e| panic!("the page is not well-formed: {e}"));
    let by_class = |c: &'static str| doc.descendants().filter(move |n| n.attribute("class") == Some(c));

    // Totals: every figure of the total row is the CSV's, to the last decimal it writes.
    let total = by_class("total").next().expect("a total row");
    let cells: Vec<(String, String)> = total
        .children()
        .filter(|c| c.attribute("data-col").is_some())
        .map(|c| (c.attribute("data-col").unwrap().to_owned(), c.attribute("data-value").unwrap().to_owned()))
        .collect();
    let want: Vec<(String, String)> = csv_total(&csv).into_iter().skip(3).collect(); // row, account, user
    assert_eq!(cells, want);
    assert!(want.iter().any(|(k, v)| k == "cost_EUR" && v != "0.00"), "{want:?}");
    assert!(want.iter().any(|(k, v)| k == "jobs" && v == "30"));
    // The rows and subtotals are the CSV's too.
    let csv_groups = csv.lines().filter(|l| l.starts_with("group,")).count();
    let csv_subtotals = csv.lines().filter(|l| l.starts_with("subtotal,")).count();
    assert_eq!(by_class("group").count(), csv_groups);
    assert_eq!(by_class("subtotal").count(), csv_subtotals);
    assert_eq!(csv_subtotals, 4);

    // Sections: period, units and rates; a stacked chart; the top 20; the efficiency bands.
    let text: String =
        doc.descendants().filter(|n| n.is_text()).filter_map(|n| n.text()).collect::<Vec<_>>().join(" ");
    for s in [
        "Period",
        "2026-11-01T00:00:00Z",
        "Units",
        "Rate card",
        "0.031 EUR",
        "gpu*",
        "Top 20 jobs by cost",
        "CPU efficiency",
    ] {
        assert!(text.contains(s), "{s} missing");
    }
    assert!(by_class("bar").count() >= 21, "a bar segment per day and group");
    let top = doc.descendants().find(|n| n.attribute("id") == Some("top-jobs-table")).unwrap();
    assert_eq!(top.descendants().filter(|n| n.has_tag_name("tr")).count(), 21, "header + 20 jobs");
    let idle = doc.descendants().find(|n| n.attribute("id") == Some("idle")).unwrap();
    let idle_text: String = idle.descendants().filter(|n| n.is_text()).filter_map(|n| n.text()).collect();
    // 0.05 and 0.3 cores: n % 5 in {0, 1}: 12 of 30 jobs.
    assert!(idle_text.contains("under half a core busy: 12, over"), "{idle_text}");

    // Self-contained, no script; hostile text is text.
    assert!(
        !doc.descendants().any(|n| n.has_tag_name("script") || n.has_tag_name("img")),
        "no script or img element"
    );
    assert!(
        !doc.descendants().any(|n| n.attribute("src").is_some() || n.attribute("href").is_some()),
        "nothing loaded"
    );
    assert!(!html.contains("@import") && !html.contains("url("), "nothing loaded by the CSS");
    assert!(
        !doc.descendants().any(|n| n.attributes().any(|a| a.name().starts_with("on"))),
        "no handler attribute"
    );
    assert!(text.contains(HOSTILE), "the hostile account shows as text");
    assert!(text.contains(HOSTILE_IMG), "the hostile user shows as text");
    assert!(html.contains("@media print") && html.contains("break-inside: avoid"));
}

#[test]
fn an_empty_period_still_makes_a_page() {
    let scene = Scene::new("html-empty");
    let (db, _) = ledger(&scene);
    let o = ctl()
        .args(["report", "--db", &db, "--since", "2020-01-01", "--until", "2020-02-01", "--format", "html"])
        .output()
        .unwrap();
    assert!(o.status.success());
    let html = String::from_utf8(o.stdout).unwrap();
    let opts = roxmltree::ParsingOptions { allow_dtd: true, ..Default::default() };
    roxmltree::Document::parse_with_options(&html, opts).unwrap();
    assert!(html.contains("No jobs in the period."));
}

#[test]
fn every_sets_the_buckets_of_the_chart_over_time() {
    let scene = Scene::new("html-every");
    let (db, _) = ledger(&scene);
    let html = |every: &str| {
        let o = ctl()
            .args(["report", "--db", &db, "--by", "account", "--format", "html", "--every", every])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8(o.stdout).unwrap()
    };
    let week = html("week");
    assert!(week.contains("CPU hours per account by week"), "{week}");
    // Days 1 to 21 of November 2026: ISO weeks 44 to 47.
    for w in ["2026-W44", "2026-W45", "2026-W46", "2026-W47"] {
        assert!(week.contains(&format!(">{w}</text>")), "{w}");
    }
    assert!(!week.contains(">2026-W48</text>"));
    assert!(html("month").contains(">2026-11</text>"));
    let o = ctl().args(["report", "--db", &db, "--format", "html", "--every", "hour"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
}

/// A job's label of a megabyte: the page showed it whole in the totals (a page of 1 MB per such
/// label, hundreds of pages in print). Cut there, whole in the CSV.
#[test]
fn a_label_of_a_megabyte_is_cut_on_the_page_and_whole_in_the_csv() {
    let scene = Scene::new("html-huge-label");
    let big = format!("<b>{}", "y".repeat(1 << 20));
    let s = json!({"type": "summary", "schema": 1, "message_id": "huge-label-0", "box_id": "huge",
        "hostname": "h", "ended_at": "2026-11-02T10:00:00Z", "wall_seconds": 60.0, "exit_code": 0,
        "reason": "exited", "cpu_user_seconds": 30.0, "cpu_system_seconds": 0.0, "peak_pss_bytes": 1024,
        "io_read_bytes": 0, "io_write_bytes": 0, "user": {"project": big}});
    let file = scene.dir.join("jobs.jsonl");
    std::fs::write(&file, format!("{s}\n")).unwrap();
    let db = format!("sqlite:{}", scene.dir.join("ledger.sqlite").display());
    let o = ctl().args(["ledger", "import", "--db", &db]).arg(&file).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let run = |format: &str| {
        let o = ctl()
            .args(["report", "--db", &db, "--since", "2026-11-01", "--until", "2026-12-01"])
            .args(["--by", "label:project", "--format", format])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8(o.stdout).unwrap()
    };
    let html = run("html");
    assert!(html.len() < 200_000, "the page is {} bytes", html.len());
    assert!(html.contains(&format!("&lt;b&gt;{}…", "y".repeat(196))), "cut, escaped, and said to be cut");
    assert!(run("csv").contains(&big), "the CSV keeps the value whole");
}
