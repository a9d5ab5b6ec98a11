//! The chargeback ledger against real components: SQLite files, the real PostgreSQL on
//! 127.0.0.1:5432 (a role and database of the test's own), the real broker (queues and keys
//! of the test's own), and real boxes producing the summaries.

use crate::common::bus::{Bus, URI};
use crate::common::proxy::Proxy;
use crate::common::{wait_for, Scene};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

fn ctl() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_proc_boxctl"));
    c.env_remove("PBOX_DB").env_remove("PBOX_URI").env_remove("PBOX_SKEY").stdin(Stdio::null());
    c
}

fn run(args: &[&str]) -> Output {
    ctl().args(args).output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A summary as proc_box writes one, with the figures the test chooses.
#[allow(clippy::too_many_arguments)]
fn summary(
    id: &str,
    account: &str,
    user: &str,
    host: &str,
    ended: &str,
    wall: f64,
    cpu: (f64, f64),
    pss: u64,
    io: (u64, u64),
    reason: &str,
    exit: i32,
) -> Value {
    json!({"type": "summary", "schema": 1, "message_id": id, "box_id": format!("box-{id}"),
        "hostname": host, "argv": ["x"], "started_at": ended, "ended_at": ended, "wall_seconds": wall,
        "exit_code": exit, "exit": {"kind": "exited", "code": exit, "signal": null}, "reason": reason,
        "cpu_user_seconds": cpu.0, "cpu_system_seconds": cpu.1, "peak_rss_bytes": pss, "peak_pss_bytes": pss,
        "max_process_rss_bytes": pss, "processes_started": 1, "processes_peak": 1, "leftover_killed": 0,
        "io_read_bytes": io.0, "io_write_bytes": io.1, "stdout_bytes": 0, "stderr_bytes": 0,
        "samples_emitted": 0, "samples_dropped": 0, "user": {"project": format!("p-{account}")},
        "owner": {"uid": 1000, "user": "owner"},
        "scheduler": {"name": "slurm", "job_id": id, "account": account, "partition": "batch", "user": user}})
}

fn unique(tag: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!("ledger_{tag}_{}_{}", std::process::id(), N.fetch_add(1, Ordering::SeqCst))
}

fn sqlite(scene: &Scene) -> String {
    format!("sqlite:{}", scene.dir.join("ledger.sqlite").display())
}

fn status(db: &str) -> Value {
    let o = run(&["ledger", "status", "--db", db, "--format", "json"]);
    assert!(o.status.success(), "status: {}", stderr(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

/// A PostgreSQL role and database of the test's own, dropped at the end.
struct Pg {
    name: String,
}

fn psql(sql: &str) {
    let o = Command::new("psql")
        .args(["-h", "127.0.0.1", "-U", "postgres", "-v", "ON_ERROR_STOP=1", "-qAtc", sql])
        .output()
        .expect("psql");
    assert!(o.status.success(), "psql {sql}: {}", String::from_utf8_lossy(&o.stderr));
}

impl Pg {
    fn new(tag: &str) -> Pg {
        let name = unique(tag).to_lowercase();
        psql(&format!("CREATE ROLE {name} LOGIN"));
        psql(&format!("CREATE DATABASE {name} OWNER {name}"));
        Pg { name }
    }

    fn url(&self, port: u16) -> String {
        format!("postgres://{0}@127.0.0.1:{port}/{0}", self.name)
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        psql(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name));
        psql(&format!("DROP ROLE IF EXISTS {}", self.name));
    }
}

/// Runs a real box that burns a little CPU and writes its summary (and stats) files.
fn real_box(scene: &Scene, name: &str, account: &str, extra: &[&str]) -> Value {
    let summary = scene.dir.join(format!("{name}.summary.json"));
    let stats = scene.dir.join(format!("{name}.stats.jsonl"));
    let user = json!({"account": account}).to_string();
    let mut args = vec![
        "--json",
        &user,
        "--summary-file",
        summary.to_str().unwrap(),
        "--stats-file",
        stats.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    args.extend_from_slice(&[
        "--",
        "sh",
        "-c",
        "i=0; while [ $i -lt 30000 ]; do i=$((i+1)); done; head -c 100000 /dev/zero > /dev/null",
    ]);
    let o =
        scene.command(&args).env("SLURM_JOB_ID", name).env("SLURM_JOB_ACCOUNT", account).output().unwrap();
    assert!(o.status.success(), "box {name}: {}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap()
}

fn f(v: &Value, k: &str) -> f64 {
    v[k].as_f64().unwrap_or_else(|| panic!("{k} in {v}"))
}

fn close(a: f64, b: f64, what: &str) {
    assert!((a - b).abs() < 1e-5, "{what}: {a} vs {b}");
}

/// The report row of a group (`row` kind and key values).
fn row<'a>(report: &'a Value, kind: &str, keys: &[(&str, &str)]) -> &'a Value {
    report["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["row"] == kind && keys.iter().all(|(k, v)| r[*k] == *v))
        .unwrap_or_else(|| panic!("no {kind} row {keys:?} in {report}"))
}

#[test]
fn real_boxes_import_exactly_once_and_the_report_by_account_matches() {
    let scene = Scene::new("ledger-import");
    let db = sqlite(&scene);
    let a1 = real_box(&scene, "j1", "acct-a", &[]);
    let a2 = real_box(&scene, "j2", "acct-a", &[]);
    let b1 = real_box(&scene, "j3", "acct-b", &[]);
    // A spool directory holding one more summary (an entry as the spool writes it), and a
    // stats file with a bad line among good ones.
    let spool = scene.dir.join("spool");
    std::fs::create_dir_all(&spool).unwrap();
    let s = summary(
        "spooled-1",
        "acct-b",
        "u",
        "h",
        "2026-01-02T03:04:05.000000Z",
        10.0,
        (1.0, 0.5),
        1 << 20,
        (0, 0),
        "exited",
        0,
    );
    let entry = json!({"exchange": "amq.topic", "routing_key": "proc_box.stats.h", "type": "summary",
        "message_id": "spooled-1", "timestamp": 1, "body": s.to_string()});
    std::fs::write(spool.join("spooled-1.json"), entry.to_string()).unwrap();
    let bad = scene.dir.join("bad.jsonl");
    let good = summary(
        "good-after-bad",
        "acct-b",
        "u",
        "h",
        "2026-01-02T03:04:05.000000Z",
        1.0,
        (0.0, 0.0),
        0,
        (0, 0),
        "exited",
        0,
    );
    std::fs::write(&bad, format!("{{not json\n{}\n{}\n", json!({"type": "summary", "schema": 9}), good))
        .unwrap();

    let mut paths: Vec<PathBuf> =
        ["j1", "j2"].iter().map(|n| scene.dir.join(format!("{n}.summary.json"))).collect();
    paths.push(scene.dir.join("j3.stats.jsonl")); // the summary line of a stats file
    paths.push(spool.clone());
    paths.push(bad.clone());
    let mut args = vec!["ledger", "import", "--db", &db];
    let texts: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    args.extend(texts.iter().map(String::as_str));
    let first = run(&args);
    assert_eq!(first.status.code(), Some(1), "rejected lines make the status 1: {}", stderr(&first));
    assert!(stdout(&first).starts_with("5 new, 0 already stored, 2 rejected"), "{}", stdout(&first));
    let err = stderr(&first);
    assert!(err.contains(&format!("{}:1: bad JSON", bad.display())), "{err}");
    assert!(err.contains(&format!("{}:2: unknown summary schema 9", bad.display())), "{err}");
    let again = run(&args);
    assert!(stdout(&again).starts_with("0 new, 5 already stored, 2 rejected"), "{}", stdout(&again));
    // Only the good files: status 0.
    let clean = run(&["ledger", "import", "--db", &db, &texts[0]]);
    assert_eq!(clean.status.code(), Some(0));
    assert_eq!(status(&db)["rows"], 5);
    // Another summary under a stored message id (more CPU) is refused by name; the stored copy
    // stays the one billed (checked by the report below).
    let mut forged = a1.clone();
    forged["cpu_user_seconds"] = json!(99999.0);
    let forged_file = scene.dir.join("forged.json");
    std::fs::write(&forged_file, format!("{forged}\n")).unwrap();
    let o = run(&["ledger", "import", "--db", &db, forged_file.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stdout(&o).starts_with("0 new, 0 already stored, 1 rejected"), "{}", stdout(&o));
    assert!(stderr(&o).contains("stored already with other content"), "{}", stderr(&o));

    let o = run(&["report", "--db", &db, "--by", "account", "--format", "json", "--until", "2099-01-01"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let rep: Value = serde_json::from_slice(&o.stdout).unwrap();
    let a = row(&rep, "group", &[("account", "acct-a")]);
    assert_eq!(a["jobs"], 2);
    let cpu = |s: &Value| f(s, "cpu_user_seconds") + f(s, "cpu_system_seconds");
    close(f(a, "cpu_hours"), (cpu(&a1) + cpu(&a2)) / 3600.0, "cpu hours of acct-a");
    close(f(a, "wall_hours"), (f(&a1, "wall_seconds") + f(&a2, "wall_seconds")) / 3600.0, "wall hours");
    let gib = (1u64 << 30) as f64;
    close(f(a, "peak_pss_gib"), f(&a1, "peak_pss_bytes").max(f(&a2, "peak_pss_bytes")) / gib, "peak pss");
    let b = row(&rep, "group", &[("account", "acct-b")]);
    assert_eq!(b["jobs"], 3);
    close(f(b, "cpu_hours"), (cpu(&b1) + 1.5) / 3600.0, "cpu hours of acct-b");
    assert_eq!(row(&rep, "total", &[])["jobs"], 5);
    // The real box's owner and scheduler made it into the columns.
    let jobs = run(&["jobs", "--db", &db, "--account", "acct-a", "--format", "json"]);
    let lines: Vec<Value> = stdout(&jobs).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["scheduler"], "slurm");
    assert_eq!(lines[0]["uid"], a1["owner"]["uid"].to_string());
}

/// Rows the test wrote itself: the report's sums, subtotals, costs, CSV and JSON are checked
/// against figures computed here.
fn arithmetic(db: &str, scene: &Scene) {
    let file = scene.dir.join("hand.jsonl");
    let gib = 1u64 << 30;
    let rows = [
        // id, account, user, host, ended, wall s, (cpu u, s), pss, (r, w), reason, exit
        summary(
            "h1",
            "phys",
            "ann",
            "node1",
            "2026-11-30T10:00:00.000000Z",
            3600.0,
            (3600.0, 0.0),
            gib,
            (gib, 0),
            "exited",
            0,
        ),
        summary(
            "h2",
            "phys",
            "bob",
            "gpu1",
            "2026-11-30T11:00:00.000000Z",
            7200.0,
            (5400.0, 1800.0),
            2 * gib,
            (0, gib),
            "limit_memory",
            137,
        ),
        summary(
            "h3",
            "chem",
            "ann",
            "node1",
            "2026-12-01T00:00:00.000000Z",
            1800.0,
            (900.0, 0.0),
            gib / 2,
            (0, 0),
            "timeout",
            124,
        ),
        summary(
            "h4",
            "chem",
            "ann",
            "node2",
            "2026-12-31T23:59:59.999999Z",
            36.0,
            (36.0, 0.0),
            0,
            (0, 0),
            "exited",
            0,
        ),
        // Outside the period: ended before it.
        summary(
            "h0",
            "phys",
            "ann",
            "node1",
            "2026-11-29T23:59:59.999999Z",
            3600.0,
            (3600.0, 0.0),
            gib,
            (0, 0),
            "exited",
            0,
        ),
    ];
    let text: String = rows.iter().map(|r| format!("{r}\n")).collect();
    std::fs::write(&file, text).unwrap();
    let o = run(&["ledger", "import", "--db", db, file.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    // A card whose float arithmetic is off by a cent: 1.015 per CPU hour.
    let card = scene.dir.join("rates.toml");
    std::fs::write(
        &card,
        "currency = \"EUR\"\ncpu_hour = 1.015\ngib_hour = 0.004\njob = 0\nminimum = 0.01\n\
         [[host]]\npattern = \"gpu*\"\nmultiplier = 1.5\n\
         [[change]]\nfrom = \"2026-12-31\"\ncpu_hour = 2\n",
    )
    .unwrap();
    let args = [
        "report",
        "--db",
        db,
        "--since",
        "2026-11-30",
        "--until",
        "2027-01-01",
        "--by",
        "account,user",
        "--rates",
        card.to_str().unwrap(),
    ];
    let o = run(&[&args[..], &["--format", "json"]].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    let rep: Value = serde_json::from_slice(&o.stdout).unwrap();
    // h1: 1 CPU h × 1.015 = 1.015 → 1.02 (half-even; floats say 1.01) + 1 GiB·h × 0.004 →
    // 1.019 → 1.02.
    // h2: 2 CPU h × 1.015 = 2.03, 2 GiB × 2 h × 0.004 = 0.016 → 2.046 × 1.5 = 3.069 → 3.07.
    // h3: 0.25 h × 1.015 = 0.25375, 0.5 GiB × 0.5 h × 0.004 = 0.001 → 0.25475 → 0.25.
    // h4: 0.01 h × 2 (the new price) = 0.02.
    let phys_ann = row(&rep, "group", &[("account", "phys"), ("user", "ann")]);
    assert_eq!(phys_ann["jobs"], 1);
    assert_eq!(phys_ann["cost"], "1.02");
    let phys_bob = row(&rep, "group", &[("account", "phys"), ("user", "bob")]);
    assert_eq!(phys_bob["cost"], "3.07");
    close(f(phys_bob, "cpu_hours"), 2.0, "bob cpu");
    close(f(phys_bob, "cpu_efficiency"), 1.0, "bob efficiency");
    close(f(phys_bob, "gib_hours"), 4.0, "bob GiB-hours");
    close(f(phys_bob, "write_gib"), 1.0, "bob writes");
    assert_eq!(phys_bob["limited"], 1);
    assert_eq!(phys_bob["failed"], 1);
    let phys = row(&rep, "subtotal", &[("account", "phys")]);
    assert_eq!(phys["jobs"], 2);
    assert_eq!(phys["cost"], "4.09");
    close(f(phys, "wall_hours"), 3.0, "phys wall");
    close(f(phys, "cpu_hours"), 3.0, "phys cpu");
    close(f(phys, "peak_pss_gib"), 2.0, "phys peak");
    close(f(phys, "gib_hours"), 5.0, "phys GiB-hours");
    let chem = row(&rep, "subtotal", &[("account", "chem")]);
    assert_eq!(chem["cost"], "0.27");
    assert_eq!(chem["limited"], 1);
    let total = row(&rep, "total", &[]);
    assert_eq!(total["jobs"], 4, "h0 ended before the period");
    assert_eq!(total["cost"], "4.36");
    close(f(total, "wall_hours"), 3.0 + 0.5 + 0.01, "total wall");
    close(f(total, "cpu_hours"), 3.0 + 0.25 + 0.01, "total cpu");
    assert_eq!(rep["units"]["cost"], "EUR");

    // CSV: parseable, the same figures.
    let o = run(&[&args[..], &["--format", "csv"]].concat());
    let mut r = csv::Reader::from_reader(o.stdout.as_slice());
    let header = r.headers().unwrap().clone();
    assert_eq!(&header[0], "row");
    assert_eq!(header.iter().next_back(), Some("cost_EUR"));
    let recs: Vec<csv::StringRecord> = r.records().map(Result::unwrap).collect();
    let total = recs.iter().find(|r| &r[0] == "total").unwrap();
    assert_eq!(total.iter().next_back(), Some("4.36"));
    assert_eq!(recs.len(), 3 + 2 + 1, "3 groups, 2 subtotals, the total");
    // The table: banner with the period and units.
    let o = run(&[&args[..], &["--format", "table"]].concat());
    let t = stdout(&o);
    assert!(t.contains("Period: 2026-11-30T00:00:00Z - 2027-01-01T00:00:00Z"), "{t}");
    assert!(t.contains("cost in EUR"), "{t}");
    assert!(t.lines().any(|l| l.starts_with("TOTAL") && l.trim_end().ends_with("4.36")), "{t}");
    // By day and label; and `jobs` as `sacct -P`.
    let o = run(&["report", "--db", db, "--by", "month,label:project", "--format", "json"]);
    let rep: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(row(&rep, "group", &[("month", "2026-11"), ("label:project", "p-phys")])["jobs"], 3);
    let o = run(&["jobs", "--db", db, "--user", "ann", "--since", "2026-11-30"]);
    let text = stdout(&o);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("message_id|box_id|host|user"));
    assert_eq!(lines.len(), 1 + 3, "h1, h3, h4: {lines:?}");
    let o = run(&["jobs", "--db", db, "--format", "csv"]);
    assert_eq!(csv::Reader::from_reader(o.stdout.as_slice()).records().count(), 5);
}

#[test]
fn sqlite_report_arithmetic_and_exact_money() {
    let scene = Scene::new("ledger-sum");
    arithmetic(&sqlite(&scene), &scene);
    assert_eq!(status(&sqlite(&scene))["schema_version"], 2);
}

#[test]
fn postgres_report_arithmetic_and_exact_money() {
    let scene = Scene::new("ledger-pg");
    let pg = Pg::new("sum");
    arithmetic(&pg.url(5432), &scene);
    // Re-importing into PostgreSQL is a no-op too.
    let o = run(&["ledger", "import", "--db", &pg.url(5432), scene.dir.join("hand.jsonl").to_str().unwrap()]);
    assert!(stdout(&o).starts_with("0 new, 5 already stored"), "{}", stdout(&o));
    assert_eq!(status(&pg.url(5432))["schema_version"], 2);
}

#[test]
fn bad_database_urls_are_clear() {
    let o = run(&["report", "--db", "mysql://h/d"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("unknown database"), "{}", stderr(&o));
    // Nothing listens on port 1.
    let o = run(&["ledger", "status", "--db", "postgres://nobody@127.0.0.1:1/none"]);
    assert_eq!(o.status.code(), Some(4));
    assert!(
        stderr(&o).contains("cannot reach PostgreSQL at postgres://nobody@127.0.0.1:1/none"),
        "{}",
        stderr(&o)
    );
    let o = run(&["report", "--since", "soon", "--db", "/nonexistent-dir/x.sqlite"]);
    assert_eq!(o.status.code(), Some(2));
    // A mistyped path is an error for the commands that only read, not a new empty ledger
    // whose bill of nothing looks real; and nothing is created there.
    let scene = Scene::new("ledger-typo");
    let typo = scene.dir.join("typo").join("ledgr.sqlite");
    for cmd in [&["report"][..], &["jobs"], &["ledger", "status"]] {
        let o = run(&[cmd, &["--db", typo.to_str().unwrap()][..]].concat());
        assert_eq!(o.status.code(), Some(1), "{cmd:?}: {}", stderr(&o));
        assert!(stderr(&o).contains("no ledger database at"), "{cmd:?}: {}", stderr(&o));
    }
    assert!(!scene.dir.join("typo").exists(), "a directory was made for the typo");
    // A period that ends before it starts is a usage error, not an empty bill.
    let o = run(&[
        "report",
        "--since",
        "2026-12-01",
        "--until",
        "2026-11-01",
        "--db",
        "/nonexistent-dir/x.sqlite",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("--until is before --since"), "{}", stderr(&o));
}

/// What import is handed from outside: a FIFO (which would block for ever) and a device are
/// refused at once; a line that is not UTF-8 costs that line only; a link in a spool directory
/// is not followed.
#[test]
fn import_refuses_what_is_not_a_regular_file_and_a_bad_line_costs_one_line() {
    let scene = Scene::new("ledger-hostile");
    let db = sqlite(&scene);
    let fifo = scene.dir.join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let mixed = scene.dir.join("stats.jsonl");
    let mut bytes = b"{\"type\":\"sample\",\"note\":\"\xff\xfe\"}\n".to_vec();
    let good = summary(
        "hostile-1",
        "a",
        "u",
        "h",
        "2026-12-01T00:00:00.000000Z",
        1.0,
        (1.0, 0.0),
        1,
        (0, 0),
        "exited",
        0,
    );
    bytes.extend_from_slice(format!("{good}\n").as_bytes());
    std::fs::write(&mixed, bytes).unwrap();
    let spool = scene.dir.join("spool");
    std::fs::create_dir(&spool).unwrap();
    let outside = scene.dir.join("outside.json");
    let other = summary(
        "hostile-2",
        "a",
        "u",
        "h",
        "2026-12-01T00:00:00.000000Z",
        1.0,
        (1.0, 0.0),
        1,
        (0, 0),
        "exited",
        0,
    );
    std::fs::write(&outside, other.to_string()).unwrap();
    std::os::unix::fs::symlink(&outside, spool.join("link.json")).unwrap();
    let o = run(&[
        "ledger",
        "import",
        "--db",
        &db,
        fifo.to_str().unwrap(),
        "/dev/zero",
        mixed.to_str().unwrap(),
        spool.to_str().unwrap(),
    ]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("not a regular file"), "{err}");
    assert!(err.contains("stats.jsonl:1: not UTF-8 text"), "{err}");
    assert!(stdout(&o).contains("1 new"), "{}\n{err}", stdout(&o));
    assert_eq!(status(&db)["rows"], 1);
}

/// One stored job whose cost is past what the arithmetic holds must not leave everybody else
/// unbilled: the report bills the rest, names that job, and its status says so.
#[test]
fn a_job_that_cannot_be_priced_does_not_block_the_bill() {
    let scene = Scene::new("ledger-big");
    let db = sqlite(&scene);
    let file = scene.dir.join("s.jsonl");
    let ended = "2026-12-01T00:00:00.000000Z";
    let normal = summary("fine-1", "a", "u", "h", ended, 3600.0, (3600.0, 0.0), 0, (0, 0), "exited", 0);
    let mut big =
        summary("huge-1", "b", "u", "h", ended, 999_999_999_999.0, (1.0, 0.0), 1, (0, 0), "exited", 0);
    big["peak_pss_bytes"] = json!(i64::MAX);
    std::fs::write(&file, format!("{normal}\n{big}\n")).unwrap();
    let o = run(&["ledger", "import", "--db", &db, file.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let card = scene.dir.join("rates.toml");
    std::fs::write(&card, "currency = \"EUR\"\ncpu_hour = 1\ngib_hour = 0.004\njob = 0\nminimum = 0\n")
        .unwrap();
    let o = run(&[
        "report",
        "--db",
        &db,
        "--since",
        "2026-11-30",
        "--until",
        "2026-12-02",
        "--rates",
        card.to_str().unwrap(),
        "--format",
        "json",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("not priced") && stderr(&o).contains("huge-1"), "{}", stderr(&o));
    let rep: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(rep.to_string().contains("1.00"), "the priced job's 1 CPU hour: {rep}");
}

/// Whatever a job put in its host name or labels, the tables and `jobs` lines carry no control
/// character to the terminal: no escape sequence, no line split.
#[test]
fn report_and_jobs_escape_control_characters_from_jobs() {
    let scene = Scene::new("ledger-esc");
    let db = sqlite(&scene);
    let file = scene.dir.join("s.jsonl");
    let ended = "2026-12-01T00:00:00.000000Z";
    let evil = "evil\u{1b}]0;pwned\u{7}\nnext";
    let s = summary("esc-1", "a", "u", evil, ended, 1.0, (1.0, 0.0), 0, (0, 0), "exited", 0);
    std::fs::write(&file, format!("{s}\n")).unwrap();
    assert!(run(&["ledger", "import", "--db", &db, file.to_str().unwrap()]).status.success());
    let period = ["--since", "2026-11-30", "--until", "2026-12-02"];
    for args in [&["report", "--by", "host"][..], &["jobs"]] {
        let o = run(&[args, &["--db", &db][..], &period[..]].concat());
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(!text.contains('\u{1b}') && !text.contains('\u{7}'), "{args:?}: {text:?}");
        assert!(text.contains("evil\\u{1b}"), "{args:?}: {text:?}");
        assert!(!text.lines().any(|l| l.starts_with("next")), "{args:?}: a row was split: {text:?}");
    }
}

/// A spreadsheet opening the CSV shows what a job put in its account or host as text: no
/// cell from a job starts a formula.
#[test]
fn csv_cells_from_jobs_cannot_start_a_spreadsheet_formula() {
    let scene = Scene::new("ledger-csvinj");
    let db = sqlite(&scene);
    let file = scene.dir.join("s.jsonl");
    let ended = "2026-12-01T00:00:00.000000Z";
    let evil = "=HYPERLINK(\"http://x\",\"y\")";
    let s = summary("csv-1", evil, "u", "@host", ended, 1.0, (1.0, 0.0), 0, (0, 0), "exited", 0);
    std::fs::write(&file, format!("{s}\n")).unwrap();
    assert!(run(&["ledger", "import", "--db", &db, file.to_str().unwrap()]).status.success());
    let period = ["--since", "2026-11-30", "--until", "2026-12-02", "--format", "csv"];
    for args in [&["report", "--by", "account,host"][..], &["jobs"]] {
        let o = run(&[args, &["--db", &db][..], &period[..]].concat());
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        let mut cells = 0;
        for rec in csv::Reader::from_reader(o.stdout.as_slice()).records() {
            for cell in rec.unwrap().iter() {
                assert!(!cell.starts_with(['=', '+', '@']), "{args:?}: cell {cell:?}");
                cells += usize::from(cell == format!("'{evil}") || cell == "'@host");
            }
        }
        assert!(cells >= 2, "{args:?}: the values are kept, as text: {}", stdout(&o));
    }
}

/// A login PostgreSQL refuses (no such role or database) is the operator's to fix: `ledger
/// run` says so and exits at once instead of retrying for ever.
#[test]
fn a_refused_postgres_login_is_an_error_at_once() {
    let scene = Scene::new("ledger-nologin");
    let name = unique("nologin").to_lowercase();
    for (url, what) in [
        (format!("postgres://{name}@127.0.0.1:5432/postgres"), "no such role"),
        (format!("postgres://postgres@127.0.0.1:5432/{name}"), "no such database"),
    ] {
        let log = scene.dir.join("ledger.log");
        let mut ledger = Ledger::start_on(URI, &url, "nologin", &unique("q"), &[], &log);
        let code =
            wait_for(&format!("ledger run to give up on {what}"), || ledger.0.try_wait().unwrap()).code();
        let err = std::fs::read_to_string(&log).unwrap();
        assert_eq!(code, Some(1), "{what}: {err}");
        assert!(err.contains("cannot log in to PostgreSQL"), "{what}: {err}");
    }
}

/// A row PostgreSQL refuses for its own data (a NUL in a text) costs that row only, named by
/// file and line: the batch around it is stored.
#[test]
fn a_row_postgres_refuses_costs_only_that_row_on_import() {
    let scene = Scene::new("ledger-pgrow");
    let pg = Pg::new("pgrow");
    let file = scene.dir.join("s.jsonl");
    let ended = "2026-12-01T00:00:00.000000Z";
    let good = summary("pgrow-1", "a", "u", "h", ended, 1.0, (1.0, 0.0), 0, (0, 0), "exited", 0);
    let bad = summary("pgrow-2", "a", "u", "h", ended, 1.0, (1.0, 0.0), 0, (0, 0), "exited\u{0}", 0);
    let also = summary("pgrow-3", "a", "u", "h", ended, 1.0, (1.0, 0.0), 0, (0, 0), "exited", 0);
    std::fs::write(&file, format!("{good}\n{bad}\n{also}\n")).unwrap();
    let o = run(&["ledger", "import", "--db", &pg.url(5432), file.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("s.jsonl:2: the database refused it"), "{}", stderr(&o));
    assert!(stdout(&o).contains("2 new"), "{}", stdout(&o));
    assert_eq!(status(&pg.url(5432))["rows"], 2);
}

/// The broker side: a ledger queue of the test's own, deleted at the end.
struct LedgerQueue {
    name: String,
}

impl Drop for LedgerQueue {
    fn drop(&mut self) {
        let name = self.name.clone();
        async_global_executor::block_on(async move {
            let Ok(conn) = lapin::Connection::connect(URI, lapin::ConnectionProperties::default()).await
            else {
                return;
            };
            if let Ok(ch) = conn.create_channel().await {
                let o = lapin::options::QueueDeleteOptions::default();
                let _ = ch.queue_delete(name.as_str().into(), o).await;
                let _ = ch.queue_delete(format!("{name}.dead").as_str().into(), o).await;
                let _ = ch
                    .exchange_delete(
                        format!("{name}.dead").as_str().into(),
                        lapin::options::ExchangeDeleteOptions::default(),
                    )
                    .await;
            }
            let _ = conn.close(200, "bye".into()).await;
        });
    }
}

/// The dead-lettered messages: (body, reason header).
fn dead_letters(queue: &str) -> Vec<(String, String)> {
    async_global_executor::block_on(async {
        let conn = lapin::Connection::connect(URI, lapin::ConnectionProperties::default()).await.unwrap();
        let ch = conn.create_channel().await.unwrap();
        let mut out = Vec::new();
        while let Some(m) = ch
            .basic_get(
                format!("{queue}.dead").as_str().into(),
                lapin::options::BasicGetOptions { no_ack: false },
            )
            .await
            .unwrap()
        {
            let reason = m
                .properties
                .headers()
                .as_ref()
                .and_then(|h| h.inner().get("x-proc-box-reason").cloned())
                .map(|v| match v {
                    lapin::types::AMQPValue::LongString(s) => {
                        String::from_utf8_lossy(s.as_bytes()).into_owned()
                    }
                    v => format!("{v:?}"),
                })
                .unwrap_or_default();
            out.push((String::from_utf8_lossy(&m.data).into_owned(), reason));
        }
        let _ = conn.close(200, "bye".into()).await;
        out
    })
}

struct Ledger(Child);

impl Ledger {
    fn start(db: &str, bus: &Bus, queue: &str, env: &[(&str, &str)], log: &Path) -> Ledger {
        Ledger::start_on(URI, db, &bus.skey, queue, env, log)
    }

    fn start_on(uri: &str, db: &str, skey: &str, queue: &str, env: &[(&str, &str)], log: &Path) -> Ledger {
        let mut c = ctl();
        c.args([
            "--uri", uri, "--skey", skey, "ledger", "run", "--db", db, "--queue", queue, "--batch", "50",
        ])
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap());
        Ledger(c.spawn().unwrap())
    }
}

impl Drop for Ledger {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn publish_all(bus: &Bus, bodies: &[String]) {
    for b in bodies {
        assert!(bus.publish(&format!("{}.h", bus.skey), b.as_bytes(), None), "unroutable");
    }
}

fn goods(tag: &str, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            summary(
                &format!("{tag}-{i}"),
                "acct",
                "u",
                "h",
                "2026-12-01T00:00:00.000000Z",
                1.0,
                (0.5, 0.0),
                1024,
                (0, 0),
                "exited",
                0,
            )
            .to_string()
        })
        .collect()
}

#[test]
fn the_consumer_stores_each_summary_once_and_dead_letters_poison() {
    let scene = Scene::new("ledger-run");
    let db = sqlite(&scene);
    let bus = Bus::new("ledger");
    let queue = LedgerQueue { name: unique("q") };
    let ledger = Ledger::start(&db, &bus, &queue.name, &[], &scene.dir.join("ledger.log"));
    let mut bodies = goods("g", 20);
    let poison = [
        "{not json".to_owned(),
        json!({"type": "summary", "schema": 99, "message_id": "p2"}).to_string(),
        json!({"type": "summary", "schema": 1, "message_id": "p3"}).to_string(),
    ];
    bodies.insert(5, poison[0].clone());
    bodies.insert(10, poison[1].clone());
    bodies.insert(15, poison[2].clone());
    // A redelivered (re-sent) summary, and samples, which are not stored.
    bodies.push(bodies[0].clone());
    bodies.push(json!({"type": "sample", "schema": 1}).to_string());
    // A later copy of a stored message id with other content (more CPU): set aside, never billed.
    let mut forged: Value = serde_json::from_str(&bodies[1]).unwrap();
    forged["cpu_user_seconds"] = json!(99999.0);
    bodies.push(forged.to_string());
    // Wait for the binding: the ledger declares it after connecting.
    wait_for("the ledger's binding", || {
        let log = std::fs::read_to_string(scene.dir.join("ledger.log")).unwrap_or_default();
        log.contains("consuming").then_some(())
    });
    publish_all(&bus, &bodies);
    // Real boxes publish their summaries to the ledger too.
    let mut args = bus.args("real-1");
    args.extend(["--json".into(), json!({"account": "real"}).to_string(), "--".into(), "true".into()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    assert!(scene.command(&args).output().unwrap().status.success());
    let st = wait_for("21 rows and 4 dead letters", || {
        let s = status(&db);
        (s["rows"] == 21 && s["dead_lettered"] == 4).then_some(s)
    });
    let reasons: Vec<String> =
        st["recent_dead_letters"].as_array().unwrap().iter().map(|d| d["reason"].to_string()).collect();
    assert!(reasons.iter().any(|r| r.contains("bad JSON")), "{reasons:?}");
    assert!(reasons.iter().any(|r| r.contains("unknown summary schema 99")), "{reasons:?}");
    assert!(reasons.iter().any(|r| r.contains("stored already with other content")), "{reasons:?}");
    let dead = wait_for("4 dead letters in the queue", || {
        let d = dead_letters(&queue.name);
        (d.len() == 4).then_some(d)
    });
    assert!(dead.iter().any(|(b, r)| b.contains("99999") && r.contains("other content")), "{dead:?}");
    assert!(dead.iter().any(|(b, r)| b == "{not json" && r.contains("bad JSON")), "{dead:?}");
    assert!(dead.iter().any(|(_, r)| r.contains("'ended_at' is missing")), "{dead:?}");
    let o = run(&["report", "--db", &db, "--by", "account", "--format", "json"]);
    let rep: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(row(&rep, "group", &[("account", "acct")])["jobs"], 20);
    let o = run(&["jobs", "--db", &db, "--format", "json"]);
    assert!(!stdout(&o).contains("99999"), "the forged copy was billed: {}", stdout(&o));
    drop(ledger);
}

#[test]
fn a_ledger_killed_between_commit_and_ack_loses_and_duplicates_nothing() {
    let scene = Scene::new("ledger-kill");
    let pg = Pg::new("kill");
    let db = pg.url(5432);
    let bus = Bus::new("ledgerkill");
    let queue = LedgerQueue { name: unique("q") };
    let log1 = scene.dir.join("first.log");
    let mut first =
        Ledger::start(&db, &bus, &queue.name, &[("PBOX_LEDGER_FAULT", "kill-after-commit")], &log1);
    wait_for("the first ledger's binding", || {
        std::fs::read_to_string(&log1).unwrap_or_default().contains("consuming").then_some(())
    });
    let bodies = goods("k", 120);
    publish_all(&bus, &bodies);
    let st = crate::common::wait_exit(&mut first.0);
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(st.signal(), Some(9), "the fault point kills it");
    assert!(std::fs::read_to_string(&log1).unwrap().contains("committed"));
    let committed = status(&db)["rows"].as_i64().unwrap();
    assert!(committed > 0 && committed < 120, "{committed} rows after the first batch");
    // The second ledger gets the unacknowledged batch again (a no-op) and the rest.
    let second = Ledger::start(&db, &bus, &queue.name, &[], &scene.dir.join("second.log"));
    wait_for("120 rows", || (status(&db)["rows"] == 120).then_some(()));
    drop(second);
    let o = run(&["jobs", "--db", &db, "--format", "csv"]);
    let ids: std::collections::BTreeSet<String> =
        csv::Reader::from_reader(o.stdout.as_slice()).records().map(|r| r.unwrap()[0].to_owned()).collect();
    assert_eq!(ids.len(), 120);
}

#[test]
fn postgres_going_away_during_ingest_loses_nothing() {
    let scene = Scene::new("ledger-outage");
    let pg = Pg::new("outage");
    // Create the schema directly, then put a relay of the test's own in front of 5432.
    assert_eq!(status(&pg.url(5432))["rows"], 0);
    let relay = Proxy::start("127.0.0.1:5432");
    let db = pg.url(relay.port);
    let bus = Bus::new("ledgerout");
    let queue = LedgerQueue { name: unique("q") };
    let log = scene.dir.join("ledger.log");
    let ledger = Ledger::start(&db, &bus, &queue.name, &[], &log);
    wait_for("the ledger's binding", || {
        std::fs::read_to_string(&log).unwrap_or_default().contains("consuming").then_some(())
    });
    publish_all(&bus, &goods("a", 50));
    wait_for("50 rows", || (status(&pg.url(5432))["rows"] == 50).then_some(()));
    relay.cut();
    publish_all(&bus, &goods("b", 50));
    wait_for("the ledger to notice", || {
        std::fs::read_to_string(&log).unwrap_or_default().contains("nothing is acknowledged").then_some(())
    });
    assert_eq!(status(&pg.url(5432))["rows"], 50);
    relay.forward();
    wait_for("100 rows", || (status(&pg.url(5432))["rows"] == 100).then_some(()));
    drop(ledger);
}

/// A database that refuses every write for a reason of its own (read-only, as a standby is
/// during a failover) is a database fault, not a bad summary: nothing is dead-lettered or
/// acknowledged, and every summary is stored once it takes writes again.
#[test]
fn a_read_only_postgres_dead_letters_nothing() {
    let scene = Scene::new("ledger-ro");
    let pg = Pg::new("ro");
    assert_eq!(status(&pg.url(5432))["rows"], 0);
    let bus = Bus::new("ledgerro");
    let queue = LedgerQueue { name: unique("q") };
    let log = scene.dir.join("ledger.log");
    let read_only = |on: bool| {
        psql(&format!("ALTER DATABASE {} SET default_transaction_read_only = {on}", pg.name));
        // Settings take effect in new sessions: end the ledger's.
        psql(&format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{}' AND pid <> pg_backend_pid()",
            pg.name
        ));
    };
    let ledger = Ledger::start(&pg.url(5432), &bus, &queue.name, &[], &log);
    wait_for("the ledger's binding", || {
        std::fs::read_to_string(&log).unwrap_or_default().contains("consuming").then_some(())
    });
    read_only(true);
    publish_all(&bus, &goods("ro", 5));
    // Until the ledger has met the refusal itself (past the lost session): it says why, with
    // the database's own words, or, wrongly, dead-letters.
    let text = wait_for("the ledger to meet the read-only database", || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        (text.contains("read-only transaction") || text.contains("dead-lettered")).then_some(text)
    });
    assert!(!text.contains("dead-lettered"), "{text}");
    assert!(dead_letters(&queue.name).is_empty(), "{text}");
    read_only(false);
    wait_for("5 rows", || (status(&pg.url(5432))["rows"] == 5).then_some(()));
    assert!(dead_letters(&queue.name).is_empty());
    assert_eq!(status(&pg.url(5432))["dead_lettered"], 0);
    drop(ledger);
}

/// Publishes summaries with confirms on `uri`, many in flight; a connection that fails is made
/// again (through the next node of `uris`) and the unconfirmed ones are sent again, with the
/// same `message_id`: the ledger must store them once.
fn publish_confirmed(uris: &[String], skey: &str, bodies: &[(String, String)]) {
    use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
    let mut left: Vec<&(String, String)> = bodies.iter().collect();
    let mut attempt = 0;
    while !left.is_empty() {
        assert!(attempt < 50, "could not publish {} summaries", left.len());
        let uri = &uris[attempt % uris.len()];
        attempt += 1;
        let sent: Option<Vec<bool>> = async_global_executor::block_on(async {
            let conn = lapin::Connection::connect(uri, lapin::ConnectionProperties::default()).await.ok()?;
            let ch = conn.create_channel().await.ok()?;
            ch.confirm_select(ConfirmSelectOptions::default()).await.ok()?;
            let mut ok = Vec::new();
            for chunk in left.chunks(500) {
                let mut pending = Vec::new();
                for (id, body) in chunk {
                    let props = lapin::BasicProperties::default()
                        .with_type("summary".into())
                        .with_message_id(id.as_str().into())
                        .with_delivery_mode(2);
                    let key = format!("{skey}.h");
                    pending.push(
                        ch.basic_publish(
                            "amq.topic".into(),
                            key.as_str().into(),
                            BasicPublishOptions::default(),
                            body.as_bytes(),
                            props,
                        )
                        .await,
                    );
                }
                for p in pending {
                    let confirmed = match p {
                        Ok(c) => matches!(c.await, Ok(c) if c.is_ack()),
                        Err(_) => false,
                    };
                    ok.push(confirmed);
                }
            }
            let _ = conn.close(200, "bye".into()).await;
            Some(ok)
        });
        if let Some(ok) = sent {
            let mut i = 0;
            left.retain(|_| {
                i += 1;
                !ok.get(i - 1).copied().unwrap_or(false)
            });
        }
    }
}

fn numbered(tag: &str, range: std::ops::Range<usize>) -> Vec<(String, String)> {
    range
        .map(|i| {
            let id = format!("{tag}-{i}");
            let s = summary(
                &id,
                "acct",
                "u",
                "h",
                "2026-12-01T00:00:00.000000Z",
                1.0,
                (0.5, 0.0),
                1024,
                (0, 0),
                "exited",
                0,
            );
            (id, s.to_string())
        })
        .collect()
}

#[test]
fn two_consumers_on_one_queue_store_10000_summaries_exactly_once_in_postgres() {
    let scene = Scene::new("ledger-two");
    let pg = Pg::new("two");
    let db = pg.url(5432);
    let skey = unique("skey");
    let queue = LedgerQueue { name: unique("q") };
    let logs = [scene.dir.join("a.log"), scene.dir.join("b.log")];
    let ledgers: Vec<Ledger> =
        logs.iter().map(|l| Ledger::start_on(URI, &db, &skey, &queue.name, &[], l)).collect();
    for l in &logs {
        wait_for("both ledgers consuming", || {
            std::fs::read_to_string(l).unwrap_or_default().contains("consuming").then_some(())
        });
    }
    let bodies = numbered("two", 0..10_000);
    publish_confirmed(&[URI.to_owned()], &skey, &bodies);
    // Some again, as a publisher resending after a reconnection would.
    publish_confirmed(&[URI.to_owned()], &skey, &bodies[..500]);
    let start = std::time::Instant::now();
    loop {
        let rows = status(&db)["rows"].as_i64().unwrap();
        if rows == 10_000 {
            break;
        }
        assert!(start.elapsed() < std::time::Duration::from_secs(120), "{rows} rows of 10000");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    drop(ledgers);
    assert_eq!(status(&db)["rows"], 10_000);
}

/// `scripts/cluster`, for the private three-node cluster on 5681-5683.
fn cluster(args: &[&str]) -> Output {
    Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/cluster"))
        .args(args)
        .output()
        .expect("scripts/cluster")
}

/// Starts the paused private node's broker again, whatever happens to the test.
struct Restart(String);

impl Drop for Restart {
    fn drop(&mut self) {
        let _ = cluster(&["resume", &self.0]);
    }
}

#[test]
fn the_node_leading_the_queue_stops_during_ingest_and_nothing_is_lost_or_duplicated() {
    let up = cluster(&["up", "cluster"]);
    assert!(up.status.success(), "scripts/cluster up: {}", String::from_utf8_lossy(&up.stderr));
    let scene = Scene::new("ledger-failover");
    let db = sqlite(&scene);
    let skey = unique("skey");
    let qname = unique("q");
    let uris: Vec<String> = (1..=3).map(|n| format!("amqp://guest:guest@127.0.0.1:568{n}/%2f")).collect();
    let ledger = Ledger::start_on(&uris.join(","), &db, &skey, &qname, &[], &scene.dir.join("ledger.log"));
    wait_for("the ledger consuming", || {
        std::fs::read_to_string(scene.dir.join("ledger.log"))
            .unwrap_or_default()
            .contains("consuming")
            .then_some(())
    });
    // Which node leads the quorum queue.
    let leader = wait_for("the queue's leader", || {
        let o = cluster(&["ctl", "1", "list_queues", "-q", "--no-table-headers", "name", "leader"]);
        let text = String::from_utf8_lossy(&o.stdout).into_owned();
        text.lines()
            .find(|l| l.split_whitespace().next() == Some(qname.as_str()))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|n| n.strip_prefix("pbox"))
            .and_then(|n| n.split('@').next())
            .map(str::to_owned)
    });
    let others: Vec<String> = (1..=3)
        .filter(|n| n.to_string() != leader)
        .map(|n| format!("amqp://guest:guest@127.0.0.1:568{n}/%2f"))
        .collect();
    let bodies = numbered("fo", 0..3000);
    publish_confirmed(&others, &skey, &bodies[..1500]);
    let restart = Restart(leader.clone());
    // Private node 1-3 of scripts/cluster, which refuses any other.
    let o = cluster(&["pause", &leader]);
    assert!(o.status.success(), "scripts/cluster pause {leader}: {}", String::from_utf8_lossy(&o.stderr));
    publish_confirmed(&others, &skey, &bodies[1500..]);
    let start = std::time::Instant::now();
    loop {
        let rows = status(&db)["rows"].as_i64().unwrap();
        if rows == 3000 {
            break;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(120),
            "{rows} rows of 3000 after node {leader} stopped"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    drop(restart);
    drop(ledger);
    let o = run(&["jobs", "--db", &db, "--format", "csv"]);
    let ids: std::collections::BTreeSet<String> =
        csv::Reader::from_reader(o.stdout.as_slice()).records().map(|r| r.unwrap()[0].to_owned()).collect();
    assert_eq!(ids.len(), 3000);
    // The test's queues go with it.
    let _ = cluster(&["ctl", "1", "delete_queue", &qname]);
    let _ = cluster(&["ctl", "1", "delete_queue", &format!("{qname}.dead")]);
}

/// A ledger the reader may only read (an auditor reading root's file) is reported on, with no
/// writer (read without locks: SQLite cannot make its index there) and while `ledger run`
/// writes to it; the reader creates nothing beside the file.
#[test]
fn a_ledger_that_may_only_be_read_is_reported_on() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root to become another user");
        return;
    }
    let scene = Scene::new("ledger-ro");
    let dir = scene.dir.join("ro");
    std::fs::create_dir(&dir).unwrap();
    let path = dir.join("ledger.sqlite");
    let db = format!("sqlite:{}", path.display());
    let file = scene.dir.join("s.jsonl");
    let ended = "2026-12-01T00:00:00.000000Z";
    let one = summary("ro-1", "acct", "u", "h", ended, 1.0, (1.0, 0.0), 0, (0, 0), "exited", 0);
    std::fs::write(&file, format!("{one}\n")).unwrap();
    assert!(run(&["ledger", "import", "--db", &db, file.to_str().unwrap()]).status.success());
    for d in [&scene.dir, &dir] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let report_as_nobody = || {
        let o = ctl()
            .args([
                "report",
                "--db",
                &db,
                "--since",
                "2026-11-30",
                "--until",
                "2026-12-02",
                "--format",
                "json",
            ])
            .uid(65534)
            .gid(65534)
            .output()
            .unwrap();
        assert!(o.status.success(), "report as nobody: {}", stderr(&o));
        let rep: Value = serde_json::from_slice(&o.stdout).unwrap();
        row(&rep, "total", &[])["jobs"].as_i64().unwrap()
    };
    assert_eq!(report_as_nobody(), 1);
    let names = || {
        let mut n: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into())
            .collect();
        n.sort();
        n
    };
    assert_eq!(names(), ["ledger.sqlite"], "the reader made files beside the ledger");
    // A writer now holds the file (and its index) open, and stores one more job.
    let bus = Bus::new("ledgerro");
    let queue = LedgerQueue { name: unique("q") };
    let log = scene.dir.join("ledger.log");
    let ledger = Ledger::start(&db, &bus, &queue.name, &[], &log);
    wait_for("the ledger's binding", || {
        std::fs::read_to_string(&log).unwrap_or_default().contains("consuming").then_some(())
    });
    let two = summary("ro-2", "acct", "u", "h", ended, 1.0, (1.0, 0.0), 0, (0, 0), "exited", 0);
    publish_all(&bus, &[two.to_string()]);
    wait_for("2 rows", || (status(&db)["rows"] == 2).then_some(()));
    assert_eq!(report_as_nobody(), 2);
    drop(ledger);
}

/// A PostgreSQL role that may only `SELECT` reports on the ledger: nothing is created or locked
/// when the schema is current.
#[test]
fn a_postgres_role_that_may_only_select_reports() {
    let scene = Scene::new("ledger-pgro");
    let pg = Pg::new("pgro");
    let file = scene.dir.join("s.jsonl");
    let ended = "2026-12-01T00:00:00.000000Z";
    let one = summary("pgro-1", "acct", "u", "h", ended, 1.0, (1.0, 0.0), 0, (0, 0), "exited", 0);
    std::fs::write(&file, format!("{one}\n")).unwrap();
    assert!(run(&["ledger", "import", "--db", &pg.url(5432), file.to_str().unwrap()]).status.success());
    let reader = format!("{}_ro", pg.name);
    psql(&format!("CREATE ROLE {reader} LOGIN"));
    let in_db = |sql: String| {
        let o = Command::new("psql")
            .args([
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-d",
                &pg.name,
                "-v",
                "ON_ERROR_STOP=1",
                "-qAtc",
                &sql,
            ])
            .output()
            .unwrap();
        assert!(o.status.success(), "{sql}: {}", String::from_utf8_lossy(&o.stderr));
    };
    in_db(format!("GRANT SELECT ON ALL TABLES IN SCHEMA public TO {reader}"));
    let url = format!("postgres://{reader}@127.0.0.1:5432/{}", pg.name);
    let o =
        run(&["report", "--db", &url, "--since", "2026-11-30", "--until", "2026-12-02", "--format", "json"]);
    let ok = o.status.success();
    let text = stderr(&o);
    // Dropped before the checks, so that the database's own drop finds no dependent role.
    in_db(format!("DROP OWNED BY {reader}"));
    psql(&format!("DROP ROLE {reader}"));
    assert!(ok, "report as a SELECT-only role: {text}");
    let rep: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(row(&rep, "total", &[])["jobs"], 1);
}
