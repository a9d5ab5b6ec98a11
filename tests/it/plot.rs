//! `proc_boxctl plot`: a real box's stats file drawn as SVG, read back as XML, and its points
//! checked against the file; the edge cases (no samples, one sample, a gap, a counter reset,
//! an empty file, hostile text) still draw and say what is missing.

use crate::common::{wait_for, Control, Scene};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub fn ctl() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_proc_boxctl"));
    c.env_remove("PBOX_DB").env_remove("PBOX_URI").stdin(Stdio::null());
    c
}

fn plot(stats: &Path, out: &Path) -> String {
    let o = ctl().arg("plot").arg(stats).arg("-o").arg(out).output().unwrap();
    assert!(o.status.success(), "plot {}: {}", stats.display(), String::from_utf8_lossy(&o.stderr));
    std::fs::read_to_string(out).unwrap()
}

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// A panel's points, turned back from pixels into (seconds, value) with the panel's own scale.
pub struct Drawn {
    pub series: Vec<(String, Vec<(f64, f64)>)>,
}

pub fn panels(svg: &str) -> Vec<(String, Drawn)> {
    let doc = roxmltree::Document::parse(svg).unwrap_or_else(|e| panic!("the SVG is not XML: {e}"));
    let attr = |n: &roxmltree::Node, k: &str| -> f64 { n.attribute(k).unwrap().parse().unwrap() };
    doc.descendants()
        .filter(|n| n.attribute("class") == Some("panel"))
        .map(|p| {
            let (x0, x1, t1) = (attr(&p, "data-x0"), attr(&p, "data-x1"), attr(&p, "data-t1"));
            let (y0, y1, v1) = (attr(&p, "data-y0"), attr(&p, "data-y1"), attr(&p, "data-v1"));
            let series = p
                .descendants()
                .filter(|n| n.has_tag_name("polyline"))
                .map(|l| {
                    let pts = l
                        .attribute("points")
                        .unwrap()
                        .split_whitespace()
                        .map(|xy| {
                            let (x, y) = xy.split_once(',').unwrap();
                            let (x, y): (f64, f64) = (x.parse().unwrap(), y.parse().unwrap());
                            ((x - x0) / (x1 - x0) * t1, (y0 - y) / (y0 - y1) * v1)
                        })
                        .collect();
                    (l.attribute("data-series").unwrap().to_owned(), pts)
                })
                .collect();
            (p.attribute("data-panel").unwrap().to_owned(), Drawn { series })
        })
        .collect()
}

fn texts(svg: &str) -> String {
    let doc = roxmltree::Document::parse(svg).unwrap();
    doc.descendants().filter(|n| n.is_text()).filter_map(|n| n.text()).collect::<Vec<_>>().join("\n")
}

fn series(p: &[(String, Drawn)], panel: &str, name: &str) -> Vec<(f64, f64)> {
    let d = &p.iter().find(|(k, _)| k == panel).unwrap_or_else(|| panic!("no panel {panel}")).1;
    d.series.iter().filter(|(k, _)| k == name).flat_map(|(_, pts)| pts.clone()).collect()
}

/// A drawn point near (t, v): within a pixel's worth of time and 1% of the panel's top.
fn near(pts: &[(f64, f64)], t: f64, v: f64, t_tol: f64, v_tol: f64) -> bool {
    pts.iter().any(|(pt, pv)| (pt - t).abs() <= t_tol && (pv - v).abs() <= v_tol)
}

fn f(v: &Value, k: &str) -> f64 {
    v[k].as_f64().unwrap_or_else(|| panic!("{k} in {v}"))
}

/// A real box: burns CPU, writes a file, is suspended and resumed over its socket; 100 ms samples.
fn real_job(scene: &Scene) -> PathBuf {
    let stats = scene.dir.join("job.stats.jsonl");
    let sock = scene.socket();
    let mut child = scene
        .command(&[
            "--id",
            "plot-demo",
            "--sint",
            "100ms",
            "--stats-file",
            stats.to_str().unwrap(),
            "--control-socket",
            sock.to_str().unwrap(),
            "--",
            "sh",
            "-c",
            "i=0; while [ $i -lt 150000 ]; do i=$((i+1)); done; head -c 4000000 /dev/zero > \"$FIX_DIR/out\"; \
             sync \"$FIX_DIR/out\"; sleep 1",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut ctl = Control::connect(&sock);
    let has = |state: &str| {
        std::fs::read_to_string(&stats).ok().is_some_and(|t| t.contains(&format!("\"state\":\"{state}\"")))
    };
    wait_for("a first sample", || has("running").then_some(()));
    ctl.ok("suspend", &[]);
    wait_for("a suspended sample", || has("suspended").then_some(()));
    ctl.ok("resume", &[]);
    let status = crate::common::wait_exit(&mut child);
    assert!(status.success(), "{status:?}");
    stats
}

#[test]
fn a_real_job_draws_its_counters_differences_and_events() {
    let scene = Scene::new("plot-real");
    let stats = real_job(&scene);
    let svg = plot(&stats, &scene.dir.join("job.svg"));
    let p = panels(&svg);
    let keys: Vec<&str> = p.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["cpu", "memory", "io", "processes"]);
    for (panel, want) in [
        ("cpu", &["cpu"][..]),
        ("memory", &["pss", "rss"]),
        ("io", &["read", "write"]),
        ("processes", &["processes", "started"]),
    ] {
        let d = &p.iter().find(|(k, _)| k == panel).unwrap().1;
        let mut have: Vec<&str> = d.series.iter().map(|(k, _)| k.as_str()).collect();
        have.dedup();
        assert_eq!(have, want, "series of panel {panel}");
    }

    let all = lines(&stats);
    let summary = all.iter().find(|v| v["type"] == "summary").unwrap();
    let samples: Vec<&Value> = all.iter().filter(|v| v["type"] == "sample").collect();
    assert!(samples.len() >= 5, "{} samples", samples.len());
    // The time axis starts when the box did (the summary's started_at).
    let started_at = humantime::parse_rfc3339(summary["started_at"].as_str().unwrap()).unwrap();
    let start = started_at.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    let cpu = series(&p, "cpu", "cpu");
    let top = cpu.iter().map(|q| q.1).fold(0.0, f64::max);
    // Every interval between two samples: a step at Δcpu/Δt, never cpu_percent. (The last one
    // may run on to the end, when the end comes soon after the last sample.)
    for w in samples[..samples.len() - 1].windows(2) {
        let (a, b) = (w[0], w[1]);
        let dt = f(b, "time_unix") - f(a, "time_unix");
        let d = f(b, "cpu_user_seconds") + f(b, "cpu_system_seconds")
            - f(a, "cpu_user_seconds")
            - f(a, "cpu_system_seconds");
        let (ta, tb) = (f(a, "time_unix") - start, f(b, "time_unix") - start);
        let t_tol = 0.002 * (tb + 1.0);
        assert!(
            near(&cpu, ta, d / dt, t_tol, 0.01 * top + 1e-6),
            "CPU from {ta} to {tb}: {} expected; {cpu:?}",
            d / dt
        );
        assert!(near(&cpu, tb, d / dt, t_tol, 0.01 * top + 1e-6), "CPU at {tb}");
    }
    // The steps add up to the job's CPU: the summary's exact total.
    let area: f64 = cpu.windows(2).filter(|w| w[0].1 == w[1].1).map(|w| (w[1].0 - w[0].0) * w[0].1).sum();
    let total = f(summary, "cpu_user_seconds") + f(summary, "cpu_system_seconds");
    assert!(
        total > 0.05 && (area - total).abs() < 0.02 * total + 0.02,
        "drawn {area} s of CPU, the summary says {total}"
    );
    let pss = series(&p, "memory", "pss");
    let pss_top = pss.iter().map(|q| q.1).fold(0.0, f64::max);
    for s in &samples {
        if let Some(v) = s["pss_bytes"].as_f64() {
            assert!(
                near(&pss, f(s, "time_unix") - start, v, 0.01, 0.01 * pss_top),
                "PSS of sample {}",
                s["seq"]
            );
        }
    }
    let write = series(&p, "io", "write");
    assert!(write.iter().any(|q| q.1 > 0.0), "the 4 MB written show as a write rate");
    let started = series(&p, "processes", "started");
    assert!(near(&started, f(summary, "wall_seconds"), f(summary, "processes_started"), 0.05, 0.01));

    let doc = roxmltree::Document::parse(&svg).unwrap();
    let kinds: Vec<&str> = doc
        .descendants()
        .filter(|n| n.attribute("class") == Some("mark"))
        .filter_map(|n| n.attribute("data-kind"))
        .collect();
    for k in ["suspend", "resume", "end"] {
        assert!(kinds.contains(&k), "mark {k} in {kinds:?}");
    }
    assert!(doc.descendants().any(|n| n.attribute("class") == Some("band suspended")));
    let text = texts(&svg);
    assert!(text.contains("box plot-demo") && text.contains("exit 0 (exited 0)"), "{text}");
    assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
    assert!(!svg.contains("href"), "self-contained: nothing to load");
}

#[test]
fn edge_cases_draw_and_say_what_is_missing() {
    let scene = Scene::new("plot-edges");
    let stats = real_job(&scene);
    let all: Vec<String> = std::fs::read_to_string(&stats)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .filter(|l| !l.is_empty())
        .collect();
    let summary = all.last().unwrap().clone();
    let samples = &all[..all.len() - 1];
    assert!(summary.contains("\"summary\"") && samples.len() >= 5);
    let case = |name: &str, lines: &[String]| -> (String, String) {
        let path = scene.dir.join(format!("{name}.jsonl"));
        std::fs::write(&path, lines.join("\n") + "\n").unwrap();
        let svg = plot(&path, &scene.dir.join(format!("{name}.svg")));
        let t = texts(&svg);
        (svg, t)
    };

    // No samples: the summary alone still gives the job's average CPU and its peak.
    let (svg, t) = case("no-samples", std::slice::from_ref(&summary));
    assert!(t.contains("no samples: CPU and I/O are the whole job's averages"), "{t}");
    assert_eq!(series(&panels(&svg), "cpu", "cpu").len(), 2, "one step over the whole job");

    // One sample.
    let (svg, t) = case("one-sample", &[samples[0].clone(), summary.clone()]);
    assert!(t.contains("one sample"), "{t}");
    assert_eq!(series(&panels(&svg), "memory", "pss").len(), 1);

    // A gap: samples 3 and 4 lost (a broker outage, a full disk).
    let mut gap = samples.to_vec();
    gap.drain(2..4);
    gap.push(summary.clone());
    let (svg, t) = case("gap", &gap);
    assert!(t.contains("seq 3-4 missing"), "{t}");
    assert!(svg.contains("class=\"band gap\""));

    // A counter reset: a second run's samples appended without a summary in between, same ids.
    let mut reset = samples.to_vec();
    let mut back: Value = serde_json::from_str(&samples[1]).unwrap();
    back["seq"] = 99.into();
    back["time_unix"] = (f(&back, "time_unix") + 100.0).into();
    back["cpu_user_seconds"] = 0.into();
    back["cpu_system_seconds"] = 0.into();
    reset.push(back.to_string());
    let (svg, t) = case("reset", &reset);
    assert!(t.contains("a counter went back"), "{t}");
    assert!(svg.contains("data-kind=\"reset\""));
    assert!(t.contains("no summary line"), "{t}");

    // Nothing at all, and lines that are not samples.
    let (_, t) = case("empty", &[]);
    assert!(t.contains("nothing to draw"), "{t}");
    let (_, t) = case("garbage", &["not json".into(), "[1]".into(), summary.clone()]);
    assert!(t.contains("2 lines that are not a sample or a summary skipped (the first is line 1)"), "{t}");
}

#[test]
fn hostile_text_is_shown_never_obeyed() {
    let scene = Scene::new("plot-hostile");
    let stats = scene.dir.join("h.jsonl");
    let o = scene
        .command(&[
            "--id",
            "<script>alert(1)</script>",
            "--stats-file",
            stats.to_str().unwrap(),
            "--",
            "sh",
            "-c",
            ": '<script>alert(\"x\")</script>' \"&amp;\" \u{1}",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let svg = plot(&stats, &scene.dir.join("h.svg"));
    let doc = roxmltree::Document::parse(&svg).unwrap();
    assert!(!doc.descendants().any(|n| n.has_tag_name("script")), "no script element");
    let t = texts(&svg);
    assert!(t.contains("box <script>alert(1)</script>"), "{t}");
    assert!(
        t.contains("<script>alert(\"x\")</script>") && t.contains("&amp;") && t.contains("\\u{1}"),
        "{t}"
    );
}

#[test]
fn png_is_refused_with_the_way_to_get_one() {
    let o: Output = ctl().args(["plot", "--format", "png", "x.jsonl"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("--format png: not built in") && e.contains("convert"), "{e}");
    let o = ctl().args(["plot", "/nonexistent/x.jsonl"]).output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", String::from_utf8_lossy(&o.stderr));
}

/// `plot` of a hostile file, with a deadline: past it the child is killed and the test fails.
fn plot_within(stats: &Path, out: &Path, secs: u64) -> String {
    let mut child = ctl().arg("plot").arg(stats).arg("-o").arg(out).stderr(Stdio::piped()).spawn().unwrap();
    let start = std::time::Instant::now();
    let st = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if start.elapsed() > std::time::Duration::from_secs(secs) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("plot {} did not finish within {secs} s", stats.display());
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(st.success(), "plot {}: {err}", stats.display());
    let svg = std::fs::read_to_string(out).unwrap();
    roxmltree::Document::parse(&svg).unwrap_or_else(|e| panic!("the SVG is not XML: {e}"));
    svg
}

/// A made-up sample line (the fields a `--stats-file` sample has), with `extra` merged in.
fn fake_sample(seq: u64, t: f64, extra: Value) -> String {
    let mut v = serde_json::json!({
        "type": "sample", "message_id": format!("h-1-a-sample-{seq}"), "box_id": "b", "hostname": "h",
        "seq": seq, "time_unix": t, "elapsed_seconds": t - 1000.0, "state": "running", "processes": 2,
        "processes_started": 3, "cpu_user_seconds": seq as f64 * 0.5, "cpu_system_seconds": 0,
        "rss_bytes": 100, "pss_bytes": 50, "io_read_bytes": 0, "io_write_bytes": 0
    });
    if let (Value::Object(m), Value::Object(e)) = (&mut v, extra) {
        m.extend(e);
    }
    v.to_string()
}

#[test]
fn values_near_the_largest_float_draw_without_looping() {
    // A memory or process count near f64::MAX rounded the panel's top up to infinity, and the
    // grid loop (v += step while v <= top) never ended.
    let scene = Scene::new("plot-huge");
    for key in ["rss_bytes", "processes", "io_write_bytes"] {
        let path = scene.dir.join(format!("{key}.jsonl"));
        let text: Vec<String> = (1..=2)
            .map(|i| fake_sample(i, 1000.0 + i as f64, serde_json::json!({ key: 1.7e308 * i as f64 / 2.0 })))
            .collect();
        std::fs::write(&path, text.join("\n") + "\n").unwrap();
        plot_within(&path, &scene.dir.join(format!("{key}.svg")), 20);
    }
}

#[test]
fn a_file_of_many_runs_draws_in_linear_time() {
    // Every line a run of its own (a hostile or corrupt file): each line looked its run up by a
    // scan of every run before it, so 200 000 lines took minutes.
    let scene = Scene::new("plot-runs");
    let path = scene.dir.join("runs.jsonl");
    let text: Vec<String> = (0..200_000u64)
        .map(|i| {
            fake_sample(1, 1000.0 + i as f64, serde_json::json!({ "message_id": format!("r{i}-sample-1") }))
        })
        .collect();
    std::fs::write(&path, text.join("\n") + "\n").unwrap();
    let svg = plot_within(&path, &scene.dir.join("runs.svg"), 60);
    assert!(texts(&svg).contains("the file holds 200000 runs"));
}

#[test]
fn a_file_of_nothing_but_events_stays_bounded() {
    // Every sample a counter reset (seq and counters going back), or a state change: each was
    // kept by the thinning, marked and noted, so the SVG grew with the file and laying out the
    // labels took quadratic time.
    let scene = Scene::new("plot-events");
    let n = 20_000u64;
    for (name, line) in [
        (
            "resets",
            &(|i: u64| fake_sample(n - i, 1000.0 + i as f64, serde_json::json!({})))
                as &dyn Fn(u64) -> String,
        ),
        ("states", &|i: u64| {
            let state = if i.is_multiple_of(2) { "running" } else { "suspended" };
            fake_sample(i + 1, 1000.0 + i as f64, serde_json::json!({ "state": state }))
        }),
    ] {
        let path = scene.dir.join(format!("{name}.jsonl"));
        std::fs::write(&path, (0..n).map(line).collect::<Vec<_>>().join("\n") + "\n").unwrap();
        let svg = plot_within(&path, &scene.dir.join(format!("{name}.svg")), 60);
        let doc = roxmltree::Document::parse(&svg).unwrap();
        let count = |class: &str| doc.descendants().filter(|d| d.attribute("class") == Some(class)).count();
        assert!(
            count("mark") <= 60 && count("note") <= 24,
            "{name}: {} marks, {} notes",
            count("mark"),
            count("note")
        );
        assert!(svg.len() < 8 << 20, "{name}: {} bytes", svg.len());
        assert!(texts(&svg).contains("more event(s) not marked"), "{name}");
    }
}

/// The highest peak RSS (VmHWM) of a running process seen until it exits, in KiB.
fn peak_rss_until_exit(child: &mut std::process::Child, secs: u64) -> u64 {
    let start = std::time::Instant::now();
    let mut peak = 0;
    loop {
        if let Ok(s) = std::fs::read_to_string(format!("/proc/{}/status", child.id())) {
            if let Some(kb) = s.lines().find_map(|l| l.strip_prefix("VmHWM:")) {
                peak = peak.max(kb.trim().trim_end_matches("kB").trim().parse().unwrap_or(0));
            }
        }
        if child.try_wait().unwrap().is_some() {
            return peak;
        }
        if start.elapsed() > std::time::Duration::from_secs(secs) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("did not finish within {secs} s");
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

#[test]
fn a_long_file_is_read_in_bounded_memory() {
    // The whole file was read into memory, then every sample kept until the chart thinned
    // them: 340 MB of samples took 500 MB. Now read line by line and thinned as it goes; a line
    // longer than 16 MiB is skipped as bad without being kept.
    let scene = Scene::new("plot-long");
    let path = scene.dir.join("long.jsonl");
    {
        use std::io::Write;
        let mut f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
        writeln!(f, "{{\"type\":\"sample\",\"box_id\":\"{}\"}}", "x".repeat(20 << 20)).unwrap();
        for i in 0..200_000u64 {
            writeln!(f, "{}", fake_sample(i + 1, 1000.0 + i as f64, serde_json::json!({}))).unwrap();
        }
    }
    assert!(std::fs::metadata(&path).unwrap().len() > 60 << 20);
    let out = scene.dir.join("long.svg");
    let mut child = ctl().arg("plot").arg(&path).arg("-o").arg(&out).spawn().unwrap();
    let peak = peak_rss_until_exit(&mut child, 120);
    assert!(peak > 0 && peak < 48 << 10, "peak RSS {peak} KiB");
    let svg = std::fs::read_to_string(&out).unwrap();
    let t = texts(&svg);
    assert!(t.contains("200000 samples read, every 64th kept"), "{t}");
    assert!(t.contains("1 line that is not a sample or a summary skipped (the first is line 1)"), "{t}");
    // Thinned, the CPU steps are still the exact average: half a core.
    let cpu = series(&panels(&svg), "cpu", "cpu");
    assert!(cpu.len() > 100 && cpu.iter().all(|q| (q.1 - 0.5).abs() < 0.01), "{cpu:?}");
}

#[test]
fn an_output_that_is_not_a_regular_file_is_written_into_never_replaced() {
    // `-o` wrote a temp file and renamed it over the path: a FIFO (or, as root, /dev/null) was
    // replaced by a regular file, and a symbolic link by a file of its own.
    use std::os::unix::fs::FileTypeExt;
    let scene = Scene::new("plot-outputs");
    let stats = scene.dir.join("s.jsonl");
    std::fs::write(&stats, fake_sample(1, 1001.0, serde_json::json!({})) + "\n").unwrap();
    let fifo = scene.dir.join("fifo.svg");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());

    // Nobody reads: a clear error at once, not a hang, and the FIFO stays.
    let o = ctl().arg("plot").arg(&stats).arg("-o").arg(&fifo).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("a FIFO that nobody reads"));
    assert!(std::fs::symlink_metadata(&fifo).unwrap().file_type().is_fifo());

    // A reader: it gets the picture, and the FIFO stays a FIFO.
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::read_to_string(fifo).unwrap())
    };
    let o = wait_for("plot into the FIFO once its reader opened it", || {
        let o = ctl().arg("plot").arg(&stats).arg("-o").arg(&fifo).output().unwrap();
        o.status.success().then_some(o)
    });
    assert!(o.status.success());
    let svg = reader.join().unwrap();
    roxmltree::Document::parse(&svg).unwrap();
    assert!(std::fs::symlink_metadata(&fifo).unwrap().file_type().is_fifo());

    // A symbolic link (to /dev/null here): neither followed nor replaced, refused.
    let link = scene.dir.join("link.svg");
    std::os::unix::fs::symlink("/dev/null", &link).unwrap();
    let o = ctl().arg("plot").arg(&stats).arg("-o").arg(&link).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("a symbolic link: not followed and not replaced"));
    assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
    // /dev/null itself (a character device) is written into; whatever the user, it stays.
    let o = ctl().arg("plot").arg(&stats).args(["-o", "/dev/null"]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(std::fs::metadata("/dev/null").unwrap().file_type().is_char_device());

    // A directory: refused, and said.
    let o = ctl().arg("plot").arg(&stats).arg("-o").arg(&scene.dir).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("is a directory"));
}
