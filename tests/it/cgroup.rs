//! The box's own cgroup (`--cgroup`), on this machine's hybrid hierarchy: the job joins it
//! before exec, subreaper mode becomes exact with it, a SIGKILLed proc_box leaves nothing
//! behind, and the cgroup is gone at the end however the box ended.

use crate::common::*;
use std::path::PathBuf;
use std::process::Stdio;

/// The job's cgroup paths, from its own /proc/self/cgroup, written by `sh` into the scene.
fn job_cgroups(scene: &Scene) -> Vec<PathBuf> {
    let text = std::fs::read_to_string(scene.dir.join("cgroup")).unwrap();
    let mut dirs = Vec::new();
    for line in text.lines() {
        let mut f = line.splitn(3, ':');
        let (_, list, path) = (f.next().unwrap(), f.next().unwrap(), f.next().unwrap());
        if !path.contains("proc_box.") {
            continue;
        }
        let mount = match list {
            "" => "/sys/fs/cgroup/unified".to_owned(),
            l => format!("/sys/fs/cgroup/{}", l.split(',').next().unwrap()),
        };
        dirs.push(PathBuf::from(format!("{mount}{path}")));
    }
    dirs
}

fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn has_cgroups() -> bool {
    is_root() && std::path::Path::new("/sys/fs/cgroup/unified/cgroup.procs").exists()
}

fn the_job_runs_in_the_box_cgroup_which_is_removed_at_the_end(mode: &str) {
    if !has_cgroups() {
        eprintln!("skipped: needs root and a cgroup v2 hierarchy");
        return;
    }
    for (job, code) in [
        ("cat /proc/self/cgroup > $FIX_DIR/cgroup", 0),
        ("cat /proc/self/cgroup > $FIX_DIR/cgroup; kill -SEGV $$", 139),
    ] {
        let scene = Scene::new(&format!("cg-{mode}"));
        // ptrace mode joins its cgroup only when asked (it is exact without one).
        let out = scene.command(&["--track", mode, "--cgroup", "required", "--", "sh", "-c", job]).run();
        assert_eq!(out.status.code(), Some(code), "{}", String::from_utf8_lossy(&out.stderr));
        let dirs = job_cgroups(&scene);
        assert!(!dirs.is_empty(), "the job is in the box's group: {dirs:?}");
        for d in dirs {
            assert!(!d.exists(), "{} is left behind", d.display());
        }
    }
}
each_mode!(the_job_runs_in_the_box_cgroup_which_is_removed_at_the_end);

/// The job is in every hierarchy of the box before exec, v2 and v1 alike: born in the v2 group
/// (`clone3` with `CLONE_INTO_CGROUP`) where the kernel allows it, moved in after the fork where
/// a seccomp policy refuses `clone3` (Docker's default profile answers ENOSYS).
fn the_job_joins_every_hierarchy_with_or_without_clone3(mode: &str) {
    if !has_cgroups() {
        eprintln!("skipped: needs root and a cgroup v2 hierarchy");
        return;
    }
    // Where this process is in a v1 memory hierarchy, the box makes its group there too.
    let memory = std::fs::read_to_string("/proc/self/cgroup")
        .unwrap()
        .lines()
        .any(|l| l.split(':').nth(1).is_some_and(|c| c.split(',').any(|c| c == "memory")));
    for refused in [false, true] {
        let scene = Scene::new(&format!("cg-clone3-{mode}"));
        let args = ["--debug", "--track", mode, "--cgroup", "required", "--", "sh", "-c"];
        let job = "cat /proc/self/cgroup > $FIX_DIR/cgroup";
        let mut cmd = if refused {
            let mut c = std::process::Command::new(fixture("seccomp_fail"));
            c.args([&libc::SYS_clone3.to_string(), &libc::ENOSYS.to_string(), "--", proc_box()]);
            c.env("FIX_DIR", &scene.dir).env("BOXTEST_MARKER", &scene.marker).stdin(Stdio::null());
            c
        } else {
            scene.command(&[])
        };
        let out = cmd.args(args).arg(job).run();
        if out.status.code() == Some(77) {
            eprintln!("no seccomp filter for this architecture; skipped");
            return;
        }
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{err}");
        assert_eq!(err.contains("clone3 into the cgroup"), refused, "which way it joined: {err}");
        let dirs = job_cgroups(&scene);
        let has = |root: &str| dirs.iter().any(|d| d.starts_with(root));
        assert!(has("/sys/fs/cgroup/unified"), "refused {refused}: not in the v2 group: {dirs:?}");
        if memory {
            assert!(has("/sys/fs/cgroup/memory"), "refused {refused}: not in the memory group: {dirs:?}");
        }
        scene.assert_no_survivors();
    }
}
each_mode!(the_job_joins_every_hierarchy_with_or_without_clone3);

fn a_sigkilled_proc_box_leaves_no_process_and_no_cgroup(mode: &str) {
    if !has_cgroups() {
        eprintln!("skipped: needs root and a cgroup v2 hierarchy");
        return;
    }
    let scene = Scene::new(&format!("cg-kill-{mode}"));
    // Written whole, then renamed: the test reads it while the job runs.
    let script = "cat /proc/self/cgroup > $FIX_DIR/cg.tmp && mv $FIX_DIR/cg.tmp $FIX_DIR/cgroup; \
                  setsid sleep 1000 & sleep 1000";
    let mut child = scene
        .command(&["--track", mode, "--cgroup", "required", "--", "sh", "-c", script])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for("the whole tree", || (scene.survivors().len() >= 4).then_some(()));
    wait_for("the cgroup file", || scene.has_file("cgroup").then_some(()));
    let dirs = job_cgroups(&scene);
    assert!(!dirs.is_empty());
    child.kill().unwrap(); // SIGKILL: no cleanup of its own
    child.wait().unwrap();
    scene.wait_no_survivors();
    wait_for("the cgroup to be removed", || dirs.iter().all(|d| !d.exists()).then_some(()));
}
each_mode!(a_sigkilled_proc_box_leaves_no_process_and_no_cgroup);

#[test]
fn subreaper_mode_counts_auto_reaped_cpu_exactly_with_a_cgroup() {
    if !has_cgroups() {
        eprintln!("skipped: needs root and a cgroup v2 hierarchy");
        return;
    }
    let burn = fixture("burn");
    let scene = Scene::new("cg-ignchld");
    let summary = scene.dir.join("summary.json");
    let out = scene
        .command(&[
            "--track",
            "subreaper",
            // A memory limit brings in the memory group, whose peak the summary cross-checks.
            "--memory-limit",
            "1G",
            "--summary-file",
            summary.to_str().unwrap(),
            burn.to_str().unwrap(),
            "ignchld",
            "3",
            "500",
        ])
        .run();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let s = read_json(&summary);
    let cpu = s["cpu_user_seconds"].as_f64().unwrap() + s["cpu_system_seconds"].as_f64().unwrap();
    // 3 × 500 ms burned by children auto-reaped without a zombie phase; without the cgroup's
    // counter subreaper mode could only estimate them from its last look. Within 2% or 20 ms
    // of the truth, whichever is larger (the job's own start-up and reaping add a few ms).
    let slack = (1.5f64 * 0.02).max(0.02);
    assert!((1.5..1.5 + slack).contains(&cpu), "{cpu} s for 1.5 s burned");
    // The summary carries the cgroup's own figures as a cross-check.
    let cg = &s["cgroup"];
    let counted = cg["cpu_user_seconds"].as_f64().unwrap() + cg["cpu_system_seconds"].as_f64().unwrap();
    assert!((counted - cpu).abs() < 1e-6, "{s}");
    assert!(cg["memory_peak_bytes"].as_u64().unwrap() > 0, "{s}");
}

#[test]
fn cgroup_off_and_required() {
    let scene = Scene::new("cg-off");
    let out =
        scene.command(&["--cgroup", "off", "sh", "-c", "cat /proc/self/cgroup > $FIX_DIR/cgroup"]).run();
    assert_eq!(out.status.code(), Some(0));
    assert!(job_cgroups(&scene).is_empty(), "--cgroup off made a cgroup");
    if has_cgroups() {
        let out = scene.command(&["--cgroup", "required", "true"]).run();
        assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    }
}

#[test]
fn an_unprivileged_user_gets_limits_without_cgroups_and_a_clear_refusal_of_required() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    if !is_root() {
        eprintln!("skipped: needs root to become another user");
        return;
    }
    let hog = fixture("memhog");
    let scene = Scene::new("cg-nobody");
    std::fs::set_permissions(&scene.dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let summary = scene.dir.join("summary.json");
    for mode in MODES {
        let out = scene
            .command(&["--track", mode, "--memory-limit", "64M", "--summary-file", summary.to_str().unwrap()])
            .arg(&hog)
            .arg("50")
            .uid(65534)
            .gid(65534)
            .env("XDG_STATE_HOME", &scene.dir)
            .run();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(143), "{mode}: {err}");
        let s = read_json(&summary);
        assert_eq!(s["reason"], "limit_memory", "{mode}: {s}");
        scene.assert_no_survivors();
    }
    // Unprivileged, subreaper mode: exact where the kernel lets any user hear fork events
    // (Linux 6.6 and later), and saying so where it does not.
    let burn = fixture("burn");
    let out = scene
        .command(&["--track", "subreaper", "--summary-file", summary.to_str().unwrap()])
        .args([burn.to_str().unwrap(), "storm", "300", "1"])
        .uid(65534)
        .gid(65534)
        .run();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let s = read_json(&summary);
    if s["processes_started_exact"] == true {
        assert_eq!(s["processes_started"], 301, "{s}");
    } else {
        assert!(s["processes_started"].as_u64().unwrap() <= 301, "{s}");
    }
    let out = scene.command(&["--cgroup", "required", "true"]).uid(65534).gid(65534).run();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{err}");
    assert!(err.contains("--cgroup required: cannot make a cgroup"), "{err}");
}

fn subreaper_mode_counts_a_fork_storm_exactly_from_the_kernels_fork_events(mode: &str) {
    if !is_root() {
        eprintln!("skipped: the process events connector needs CAP_NET_ADMIN");
        return;
    }
    let burn = fixture("burn");
    let scene = Scene::new("storm-count");
    let summary = scene.dir.join("summary.json");
    let out = scene
        .command(&[
            "--track",
            mode,
            "--summary-file",
            summary.to_str().unwrap(),
            burn.to_str().unwrap(),
            "storm",
            "300",
            "1",
        ])
        .run();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let s = read_json(&summary);
    // The main process and its 300 short-lived children, none missed between two walks.
    assert_eq!(s["processes_started"], 301, "{mode}: {s}");
    assert_eq!(s["processes_started_exact"], true, "{mode}");
}
each_mode!(subreaper_mode_counts_a_fork_storm_exactly_from_the_kernels_fork_events);

fn stop_and_kill_still_work_on_a_suspended_box_with_a_cgroup(mode: &str) {
    for (command, args, code) in [("stop", &[][..], 143), ("kill", &["KILL"][..], 137)] {
        let scene = Scene::new(&format!("cg-suspended-{mode}-{command}"));
        let sock = scene.socket();
        let mut child = scene
            .command(&["--track", mode, "--control-socket", sock.to_str().unwrap(), "--"])
            .args(["sh", "-c", "setsid sleep 1000 & exec sleep 1000"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut ctl = Control::connect(&sock);
        wait_for("two processes", || (ctl.status()["processes"] == 2).then_some(()));
        let pids = status_pids(&ctl.status());
        ctl.ok("suspend", &[]);
        wait_for("the tree stopped", || pids.iter().all(|&p| is_stopped(p)).then_some(()));
        ctl.ok(command, args);
        assert_eq!(wait_exit(&mut child).code(), Some(code), "{mode} {command}");
        scene.assert_no_survivors();
    }
}
each_mode!(stop_and_kill_still_work_on_a_suspended_box_with_a_cgroup);

#[test]
fn ptrace_mode_leaves_the_job_out_of_a_cgroup_unless_asked() {
    if !has_cgroups() {
        eprintln!("skipped: needs root and a cgroup v2 hierarchy");
        return;
    }
    let scene = Scene::new("cg-ptrace-auto");
    let out = scene
        .command(&["--track", "ptrace", "--", "sh", "-c", "cat /proc/self/cgroup > $FIX_DIR/cgroup"])
        .run();
    assert_eq!(out.status.code(), Some(0));
    assert!(job_cgroups(&scene).is_empty(), "ptrace mode joined a cgroup it does not use");
    // A memory limit wants the cgroup's hard ceiling: then it joins.
    let out = scene
        .command(&[
            "--track",
            "ptrace",
            "--memory-limit",
            "1G",
            "--",
            "sh",
            "-c",
            "cat /proc/self/cgroup > $FIX_DIR/cgroup",
        ])
        .run();
    assert_eq!(out.status.code(), Some(0));
    assert!(!job_cgroups(&scene).is_empty());
}

/// The box directories named for pid namespace `ns` and pid 1, in every hierarchy.
fn pid1_dirs(ns: &str) -> Vec<PathBuf> {
    let name = format!("proc_box.{ns}.1");
    let out = std::process::Command::new("find")
        .args(["/sys/fs/cgroup", "-maxdepth", "4", "-type", "d", "-name", &name])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).lines().map(PathBuf::from).collect()
}

/// As pid 1 of a pid namespace (a container's init, `unshare -p`), proc_box would adopt its own
/// cgroup watcher: it starts none (its death ends the namespace anyway). Its group is named for
/// the namespace, so two such boxes never collide; one left by a SIGKILL is swept by a later
/// box, and every later box still gets its cgroup.
#[test]
fn as_pid_1_of_a_pid_namespace_no_watcher_and_no_collision() {
    if !has_cgroups() {
        eprintln!("skipped: needs root and cgroups");
        return;
    }
    let s = Scene::new("pidns");
    let mut child = std::process::Command::new("unshare")
        .args(["-p", "-f", "--mount-proc", proc_box(), "--cgroup", "required", "--", "sleep", "300"])
        .env("BOXTEST_MARKER", &s.marker)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let root = child.id() as i32;
    let comm = |p: i32| std::fs::read_to_string(format!("/proc/{p}/comm")).unwrap_or_default();
    let cmdline = |p: i32| std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
    let sleep = wait_for_tree("the job to start", root, || {
        tree_of(root).into_iter().find(|&p| comm(p).trim() == "sleep")
    });
    let boxed = tree_of(root).into_iter().find(|&p| comm(p).trim() == "proc_box").expect("proc_box");
    // Give a would-be watcher the time to be reparented to pid 1 (proc_box) before looking.
    wait_for("the job's cgroup", || {
        std::fs::read_to_string(format!("/proc/{sleep}/cgroup")).ok().filter(|c| c.contains("proc_box."))
    });
    let watcher = tree_of(root)
        .into_iter()
        .filter(|&p| cmdline(p).windows(25).any(|w| w == b"--internal-cgroup-watcher"))
        .collect::<Vec<_>>();
    assert!(watcher.is_empty(), "a watcher inside the namespace: {watcher:?}");
    let ns = std::fs::read_link(format!("/proc/{boxed}/ns/pid")).unwrap();
    let ns = ns.to_string_lossy().trim_start_matches("pid:[").trim_end_matches(']').to_owned();
    let dirs = pid1_dirs(&ns);
    assert!(!dirs.is_empty(), "no cgroup named for the namespace {ns}");

    // SIGKILL: the namespace ends with its pid 1; its group stays behind.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(boxed), nix::sys::signal::Signal::SIGKILL).unwrap();
    wait_exit(&mut child);
    wait_for("the namespace to be gone", || {
        (!std::path::Path::new(&format!("/proc/{sleep}")).exists()).then_some(())
    });
    // Once it is old enough to be taken as stale (its owner cannot be looked up from another
    // namespace), the next box sweeps it, and gets a cgroup of its own.
    for d in &dirs {
        let t = std::process::Command::new("touch").args(["-d", "2 hours ago"]).arg(d).status().unwrap();
        assert!(t.success());
    }
    let out = std::process::Command::new("unshare")
        .args(["-p", "-f", "--mount-proc", proc_box(), "--cgroup", "required", "--", "true"])
        .env("BOXTEST_MARKER", &s.marker)
        .stdin(Stdio::null())
        .run();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(pid1_dirs(&ns).is_empty(), "the stale group of namespace {ns} is still there");
    s.assert_no_survivors();
}
