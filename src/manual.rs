//! Man pages and shell completions, generated from the parsers' own definitions.
//!
//! Both binaries carry this (`--generate`), as ripgrep does: an installed binary writes the man
//! page and completions that match itself, whatever version it is, with no source tree at
//! hand. The options come from clap, so they cannot drift from the parser; the sections clap
//! knows nothing of (examples, signals, environment, exit status) are written here, once.

use roff::{bold, roman, Roff};

/// A man page section of tagged paragraphs: (tag, text). An empty tag is a plain paragraph.
pub struct Section {
    pub title: &'static str,
    pub items: &'static [(&'static str, &'static str)],
}

/// What `--generate` takes.
pub const TARGETS: &str = "man, bash, zsh, fish, elvish or powershell";

/// The man page (`what` = "man") or a completion script for `bin`.
pub fn generate(cmd: clap::Command, bin: &str, what: &str, sections: &[Section]) -> Result<String, String> {
    let mut out = Vec::new();
    if what == "man" {
        man(cmd, sections, &mut out).map_err(|e| e.to_string())?;
        return Ok(String::from_utf8_lossy(&out).into_owned());
    }
    let shell: clap_complete::Shell =
        what.parse().map_err(|_| format!("--generate takes {TARGETS}, not '{what}'"))?;
    let mut cmd = cmd;
    clap_complete::generate(shell, &mut cmd, bin, &mut out);
    let script = String::from_utf8_lossy(&out).into_owned();
    Ok(if shell == clap_complete::Shell::Bash { with_go_spelling(&script) } else { script })
}

fn man(cmd: clap::Command, sections: &[Section], w: &mut Vec<u8>) -> std::io::Result<()> {
    let has_subcommands = cmd.has_subcommands();
    let page = clap_mangen::Man::new(cmd);
    page.render_title(w)?;
    page.render_name_section(w)?;
    page.render_synopsis_section(w)?;
    page.render_description_section(w)?;
    page.render_options_section(w)?;
    if has_subcommands {
        page.render_subcommands_section(w)?;
    }
    for s in sections {
        let mut r = Roff::new();
        r.control("SH", [s.title]);
        for (tag, text) in s.items {
            if tag.is_empty() {
                r.control("PP", []).text([roman(*text)]);
            } else {
                r.control("TP", []).text([bold(*tag)]).text([roman(*text)]);
            }
        }
        w.extend_from_slice(r.to_roff().as_bytes());
    }
    page.render_version_section(w)
}

/// Offers every long option in the Go tool's single-dash spelling too (`-tim<TAB>` gives
/// `-timeout`), since scripts written for it use that form.
fn with_go_spelling(script: &str) -> String {
    let mut out = String::with_capacity(script.len() * 2);
    for line in script.split_inclusive('\n') {
        let Some(start) = line.find("opts=\"") else {
            out.push_str(line);
            continue;
        };
        let body_start = start + "opts=\"".len();
        let Some(len) = line[body_start..].find('"') else {
            out.push_str(line);
            continue;
        };
        let words: Vec<&str> = line[body_start..body_start + len].split_whitespace().collect();
        let mut all: Vec<String> = words.iter().map(|w| w.to_string()).collect();
        for w in &words {
            if let Some(name) = w.strip_prefix("--").filter(|n| !n.is_empty()) {
                all.push(format!("-{name}"));
            }
        }
        out.push_str(&line[..body_start]);
        out.push_str(&all.join(" "));
        out.push_str(&line[body_start + len..]);
    }
    out
}

/// proc_box's own sections.
pub const PROC_BOX: &[Section] = &[
    Section {
        title: "EXAMPLES",
        items: &[
            (
                "proc_box --timeout 10m -- make -j8",
                "Runs make with a wall-clock limit of ten minutes. At the limit every process of the tree gets SIGTERM, then SIGKILL after the grace period (10s); proc_box exits 124.",
            ),
            (
                "proc_box --memory-limit 4G --pids-limit 200 --cpu-limit 2h -- ./job.sh",
                "Limits the whole tree: its PSS, its number of live processes and its CPU time. The summary's reason says which limit ended the job.",
            ),
            (
                "proc_box --uri amqps://user:secret@broker/%2f --json '{\"project\":\"p1\"}' -- ./simulate",
                "Emits samples and a billing summary to the broker, and takes control commands from it. Without --uri the box runs fully locally.",
            ),
            (
                "proc_box --summary-file job.json --format '%e s, %U+%S s CPU, exit %x' -- ./build.sh",
                "Writes the summary to a file and prints a usage line of your own, as /usr/bin/time -f does.",
            ),
            (
                "proc_box --control-socket /tmp/job.sock -- ./server & proc_boxctl send --socket /tmp/job.sock suspend",
                "Controls a running box through its local socket: suspend, resume, stop, kill, status.",
            ),
            (
                "proc_box -timeout 3h50m -uri amqp://broker/%2f -- ./task",
                "The Go tool's single-dash spelling works for every option.",
            ),
        ],
    },
    Section {
        title: "SIGNALS",
        items: &[
            (
                "SIGINT, SIGTERM, SIGQUIT",
                "A graceful stop of the whole tree: the stop signal, then SIGKILL after --grace. Sent again (by another sender, or at least 1 s later), SIGKILL at once.",
            ),
            ("SIGHUP", "Emit a sample now."),
            ("SIGTSTP, SIGTTIN, SIGTTOU", "Suspend the whole tree and stop proc_box, like Ctrl-Z."),
            ("SIGCONT", "Resume after a suspend; otherwise forwarded."),
            ("any other signal", "Forwarded to every process of the tree."),
            (
                "",
                "The job starts with SIGINT, SIGQUIT, SIGTERM, SIGHUP, SIGALRM and the stop signal at their defaults, as under timeout(1); every other disposition and the signal mask are inherited as they were.",
            ),
        ],
    },
    Section {
        title: "ENVIRONMENT",
        items: &[
            (
                "PBOX_<NAME>",
                "Every option can also be given as PBOX_ and its name in upper case, with - as _: PBOX_URI, PBOX_TIMEOUT, PBOX_MEMORY_LIMIT. The command line wins.",
            ),
            (
                "SLURM_JOB_ID, PBS_JOBID, LSB_JOBID, JOB_ID",
                "The box id when --id is unset; the scheduler's job id, account and partition go to the summary's scheduler object.",
            ),
            ("PROC_BOX_ID, PROC_BOX_TRACK", "Set for the job: its box id and the tracking mode."),
        ],
    },
    Section {
        title: "EXIT STATUS",
        items: &[
            ("N", "The main process exited with status N."),
            ("128+N", "The main process was ended by signal N."),
            (
                "124",
                "The wall-clock timeout expired (--preserve-status: 128+N; --kill-status: 137 where SIGKILL had to follow after the grace period).",
            ),
            ("125", "proc_box itself failed before the command ran, including a usage error."),
            ("126", "The command was found but could not be executed."),
            ("127", "The command was not found."),
        ],
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_spelling_is_added_to_every_option_list() {
        let script = "x\n            opts=\"-h --timeout --uri <CMD>...\"\n";
        assert_eq!(
            with_go_spelling(script),
            "x\n            opts=\"-h --timeout --uri <CMD>... -timeout -uri\"\n"
        );
    }
}
