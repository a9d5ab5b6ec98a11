//! A real browser: headless Chromium (Debian's `chromium`, installed by scripts/test) loads the
//! HTML report and a job's SVG. The screenshots must not be blank, the DOM it built must hold
//! the totals, and no script from a label may have run. The screenshots stay under
//! `target/tmp/screenshots/` for a person to look at.
//!
//! Chromium runs inside proc_box (subreaper mode, a timeout): its renderer and GPU helper
//! processes end with it, whatever happens.

use crate::common::{proc_box, Scene};
use crate::report_html::{csv_total, ledger, report, HOSTILE};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn screenshots() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs chromium on `page` with `extra` flags; returns its stdout.
fn chromium(scene: &Scene, page: &Path, extra: &[&str]) -> String {
    let bin = ["chromium", "chromium-browser"]
        .into_iter()
        .find(|b| {
            Command::new("sh")
                .args(["-c", &format!("command -v {b}")])
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .expect("chromium is needed for this test: scripts/test installs it (apt-get install chromium)");
    let profile = scene.dir.join(format!("chromium-profile-{}", extra.len()));
    let url = format!("file://{}", page.display());
    let mut args: Vec<String> = ["--track", "subreaper", "--timeout", "120s", "--grace", "2s", "--", bin]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.extend(
        [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-default-apps",
            "--disable-extensions",
            "--no-first-run",
            "--no-default-browser-check",
            "--mute-audio",
            "--hide-scrollbars",
        ]
        .map(String::from),
    );
    args.push(format!("--user-data-dir={}", profile.display()));
    args.extend(extra.iter().map(|s| s.to_string()));
    args.push(url);
    let o = Command::new(proc_box()).args(&args).stdin(Stdio::null()).output().unwrap();
    assert!(
        o.status.success(),
        "chromium on {}: {:?}\n{}",
        page.display(),
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Takes a screenshot and returns (share of pixels that are not white, distinct colours).
fn screenshot(scene: &Scene, page: &Path, name: &str, size: &str) -> (f64, usize) {
    let file = screenshots().join(name);
    let _ = std::fs::remove_file(&file);
    chromium(scene, page, &[&format!("--window-size={size}"), &format!("--screenshot={}", file.display())]);
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&file).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    let channels = info.color_type.samples();
    assert!(info.bit_depth == png::BitDepth::Eight && channels >= 3, "{info:?}");
    let pixels: Vec<&[u8]> = buf[..info.buffer_size()].chunks(channels).collect();
    let inked = pixels.iter().filter(|p| p[..3].iter().any(|c| *c < 235)).count();
    let mut colours: Vec<[u8; 3]> = pixels.iter().map(|p| [p[0] & 0xf0, p[1] & 0xf0, p[2] & 0xf0]).collect();
    colours.sort_unstable();
    colours.dedup();
    (inked as f64 / pixels.len() as f64, colours.len())
}

/// The test's own page (the report has no script): the report in a frame as wide as a page,
/// and the right edge of each of its tables and charts, written into the DOM.
const A4_FRAME: &str = r#"<!DOCTYPE html><html><body style="margin:0">
<iframe id="r" src="report.html" style="width:WIDTHpx;height:3000px;border:0"></iframe>
<script>
document.getElementById('r').addEventListener('load', function () {
  var d = this.contentDocument, out = [];
  var w = this.clientWidth;
  d.querySelectorAll('table, svg').forEach(function (t, i) {
    out.push((t.id || t.tagName + i) + ':' + Math.ceil(t.getBoundingClientRect().right) + '/' + w);
  });
  document.body.setAttribute('data-fit', out.join(' '));
});
</script></body></html>"#;

#[test]
fn chromium_draws_the_report_and_the_chart_and_runs_no_label() {
    let scene = Scene::new("browser");
    let (db, rates) = ledger(&scene);
    let html = report(&db, &rates, "html");
    let csv = report(&db, &rates, "csv");
    let page = scene.dir.join("report.html");
    std::fs::write(&page, &html).unwrap();

    // The detector works: the same hostile label, unescaped, does run in this browser.
    let bait = scene.dir.join("bait.html");
    std::fs::write(&bait, format!("<!DOCTYPE html><html><body><p>{HOSTILE}</p></body></html>")).unwrap();
    let dom = chromium(&scene, &bait, &["--dump-dom", "--virtual-time-budget=2000"]);
    assert!(dom.contains("data-pwned=\"1\""), "the bait's script should run: {dom}");

    // The report: the DOM Chromium built holds the totals, and nothing of a label ran.
    let dom = chromium(&scene, &page, &["--dump-dom", "--virtual-time-budget=2000"]);
    assert!(dom.contains("id=\"totals-table\""), "{dom}");
    assert!(!dom.contains("data-pwned=\""), "a script from a label ran");
    assert!(!dom.contains("<script") && !dom.contains("<img"), "an element from a label was made");
    assert!(dom.contains("&lt;script&gt;document.body.setAttribute"), "the label shows as text");
    let total =
        dom.split("<tr class=\"total\">").nth(1).expect("the total row").split("</tr>").next().unwrap();
    for (col, value) in csv_total(&csv).into_iter().skip(3) {
        assert!(
            total.contains(&format!("data-col=\"{col}\" data-value=\"{value}\"")),
            "total {col} = {value}: {total}"
        );
    }
    let cost = csv_total(&csv).into_iter().find(|(k, _)| k == "cost_EUR").unwrap().1;
    assert!(total.contains(&format!(">{cost}</td>")), "the total cost {cost} shows: {total}");

    // On paper: A4 inside the page's 12 mm margins is 703 px wide (letter: 725). The print
    // layout applies at that width on a screen too, so there no table or chart may pass the
    // right edge: nothing is cut.
    let frame = scene.dir.join("a4.html");
    std::fs::write(&frame, A4_FRAME.replace("WIDTH", "703")).unwrap();
    let dom = chromium(
        &scene,
        &frame,
        &["--dump-dom", "--virtual-time-budget=3000", "--allow-file-access-from-files"],
    );
    let fit = dom.split("data-fit=\"").nth(1).expect("the measure ran").split('"').next().unwrap();
    assert!(fit.split_whitespace().count() >= 5, "{fit}");
    for item in fit.split_whitespace() {
        let (name, rest) = item.split_once(':').unwrap();
        let (right, width) = rest.split_once('/').unwrap();
        let (right, width): (f64, f64) = (right.parse().unwrap(), width.parse().unwrap());
        assert!(right <= width, "{name} passes the page's edge: {right} > {width} ({fit})");
    }

    let (inked, colours) = screenshot(&scene, &page, "report.png", "1200,2400");
    assert!(
        inked > 0.03 && colours >= 6,
        "the report's screenshot looks blank: {inked:.3} inked, {colours} colours"
    );

    // A job's chart, opened alone as an SVG document.
    let stats = scene.dir.join("job.jsonl");
    let o = scene
        .command(&[
            "--sint",
            "100ms",
            "--stats-file",
            stats.to_str().unwrap(),
            "--",
            "sh",
            "-c",
            "i=0; while [ $i -lt 40000 ]; do i=$((i+1)); done; sleep 0.5",
        ])
        .output()
        .unwrap();
    assert!(o.status.success());
    let svg = scene.dir.join("job.svg");
    let o = crate::plot::ctl().arg("plot").arg(&stats).arg("-o").arg(&svg).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let dom = chromium(&scene, &svg, &["--dump-dom"]);
    assert!(dom.contains("data-panel=\"cpu\"") && dom.contains("CPU (cores)"), "{dom}");
    // As wide as an A4 page: the chart scales down rather than being cut.
    let frame = scene.dir.join("a4-svg.html");
    std::fs::write(&frame, A4_FRAME.replace("WIDTH", "703").replace("report.html", "job.svg")).unwrap();
    let dom = chromium(
        &scene,
        &frame,
        &["--dump-dom", "--virtual-time-budget=3000", "--allow-file-access-from-files"],
    );
    let fit = dom.split("data-fit=\"").nth(1).expect("the measure ran").split('"').next().unwrap();
    let (right, width) = fit.split_once(':').unwrap().1.split_once('/').unwrap();
    assert!(right.parse::<f64>().unwrap() <= width.parse::<f64>().unwrap(), "the chart is cut on A4: {fit}");
    let (inked, colours) = screenshot(&scene, &svg, "plot.png", "1200,950");
    assert!(
        inked > 0.03 && colours >= 4,
        "the chart's screenshot looks blank: {inked:.3} inked, {colours} colours"
    );
}
