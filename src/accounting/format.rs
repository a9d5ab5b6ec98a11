//! `--format`: the end-of-job line as the user writes it, in the manner of `/usr/bin/time -f`.
//!
//! The template is parsed once, when the options are read, so that a typo is a usage error
//! before the job runs, not a garbled line after it. It is rendered from the summary's JSON,
//! the same object sites bill by, so every figure means what its summary field means.

use serde_json::Value;

/// One piece of a parsed template.
#[derive(Clone, Debug, PartialEq)]
enum Piece {
    Text(String),
    /// A `/usr/bin/time` letter.
    Letter(char),
    /// `%{field}` or `%{field.sub}`: a summary field, by its JSON path.
    Field(Vec<String>),
}

/// A parsed `--format` template.
#[derive(Clone, Debug, PartialEq)]
pub struct Format(Vec<Piece>);

/// The `/usr/bin/time` letters proc_box knows, and what they stand for.
pub const LETTERS: [(char, &str); 7] = [
    ('e', "wall-clock seconds"),
    ('U', "CPU seconds in user mode, whole tree"),
    ('S', "CPU seconds in kernel mode, whole tree"),
    ('P', "CPU share: (user + system) / wall, in percent"),
    ('M', "largest resident set of any one process, KiB"),
    ('x', "proc_box's exit status"),
    ('C', "the command and its arguments"),
];

/// The summary's top-level fields a `%{…}` may name.
pub const FIELDS: [&str; 36] = [
    "type",
    "schema",
    "message_id",
    "box_id",
    "hostname",
    "argv",
    "started_at",
    "ended_at",
    "wall_seconds",
    "exit_code",
    "exit",
    "reason",
    "cpu_user_seconds",
    "cpu_system_seconds",
    "cpu_exact",
    "cpu_inexact_reason",
    "peak_rss_bytes",
    "peak_pss_bytes",
    "peak_shmem_fd_bytes",
    "peak_memory_bytes",
    "max_process_rss_bytes",
    "processes_started",
    "processes_started_exact",
    "processes_peak",
    "leftover_killed",
    "io_read_bytes",
    "io_write_bytes",
    "stdout_bytes",
    "stderr_bytes",
    "samples_emitted",
    "samples_dropped",
    "limits",
    "cgroup",
    "user",
    "owner",
    "scheduler",
];

impl Format {
    /// Parses `%e`, `%{peak_pss_bytes}`, `%%`, and the escapes `\n`, `\t`, `\\`.
    pub fn parse(text: &str) -> Result<Format, String> {
        let mut pieces = Vec::new();
        let mut lit = String::new();
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some('n') => lit.push('\n'),
                    Some('t') => lit.push('\t'),
                    Some('\\') => lit.push('\\'),
                    Some(other) => {
                        return Err(format!("--format: unknown escape '\\{other}' (use \\n, \\t, \\\\)"))
                    }
                    None => lit.push('\\'),
                },
                '%' => {
                    let piece = match chars.next() {
                        Some('%') => {
                            lit.push('%');
                            continue;
                        }
                        Some('{') => {
                            let mut name = String::new();
                            loop {
                                match chars.next() {
                                    Some('}') => break,
                                    Some(ch) => name.push(ch),
                                    None => {
                                        return Err(format!("--format: '%{{{name}' is not closed by '}}'"))
                                    }
                                }
                            }
                            let path: Vec<String> = name.split('.').map(str::to_owned).collect();
                            if !FIELDS.contains(&path[0].as_str()) || path.iter().any(String::is_empty) {
                                return Err(format!(
                                    "--format: unknown field '%{{{name}}}' (use a summary field, e.g. %{{peak_pss_bytes}}, %{{exit.signal}}, %{{user.project}})"
                                ));
                            }
                            Piece::Field(path)
                        }
                        Some(l) if LETTERS.iter().any(|(k, _)| *k == l) => Piece::Letter(l),
                        Some(other) => {
                            let known: String = LETTERS.iter().map(|(k, _)| *k).collect();
                            return Err(format!(
                                "--format: unknown field '%{other}' (letters: {known}; or %{{summary_field}}; %% for %)"
                            ));
                        }
                        None => return Err("--format: a lone '%' at the end (write %% for %)".into()),
                    };
                    if !lit.is_empty() {
                        pieces.push(Piece::Text(std::mem::take(&mut lit)));
                    }
                    pieces.push(piece);
                }
                _ => lit.push(c),
            }
        }
        if !lit.is_empty() {
            pieces.push(Piece::Text(lit));
        }
        Ok(Format(pieces))
    }

    /// The line for this summary (its JSON). A field that is absent or null prints as `-`.
    pub fn render(&self, summary: &Value) -> String {
        let num = |key: &str| summary.get(key).and_then(Value::as_f64).unwrap_or(0.0);
        let mut out = String::new();
        for piece in &self.0 {
            match piece {
                Piece::Text(t) => out.push_str(t),
                Piece::Letter('e') => out.push_str(&format!("{:.2}", num("wall_seconds"))),
                Piece::Letter('U') => out.push_str(&format!("{:.2}", num("cpu_user_seconds"))),
                Piece::Letter('S') => out.push_str(&format!("{:.2}", num("cpu_system_seconds"))),
                Piece::Letter('P') => {
                    let wall = num("wall_seconds");
                    let cpu = num("cpu_user_seconds") + num("cpu_system_seconds");
                    let pct = if wall > 0.0 { cpu / wall * 100.0 } else { 0.0 };
                    out.push_str(&format!("{pct:.0}%"));
                }
                Piece::Letter('M') => {
                    out.push_str(&format!("{}", num("max_process_rss_bytes") as u64 / 1024))
                }
                Piece::Letter('x') => out.push_str(&format!("{}", num("exit_code") as i64)),
                Piece::Letter('C') => {
                    let argv =
                        summary.get("argv").and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[]);
                    let words: Vec<&str> = argv.iter().filter_map(Value::as_str).collect();
                    push_clean(&mut out, &words.join(" "));
                }
                Piece::Letter(_) => {}
                Piece::Field(path) => {
                    let value = path.iter().try_fold(summary, |v, key| v.get(key));
                    match value {
                        None | Some(Value::Null) => out.push('-'),
                        Some(Value::String(s)) => push_clean(&mut out, s),
                        Some(other) => push_clean(&mut out, &other.to_string()),
                    }
                }
            }
        }
        out
    }
}

/// A value from the job (an argument, a label) is escaped: it must not put control characters
/// on a terminal. Only the template's own `\n` and `\t` are written as they are.
fn push_clean(out: &mut String, text: &str) {
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn renders_letters_fields_and_escapes() {
        let summary = json!({
            "wall_seconds": 2.0, "cpu_user_seconds": 1.5, "cpu_system_seconds": 0.5,
            "max_process_rss_bytes": 10240, "exit_code": 124, "argv": ["sleep", "30"],
            "reason": "timeout", "peak_pss_bytes": 4096, "exit": {"kind": "signaled", "signal": 15},
            "user": {"project": "x"}, "stdout_bytes": null,
        });
        let f = Format::parse("%e %U %S %P %M %x %C|%{reason} %{peak_pss_bytes} %{exit.signal} %{user.project} %{stdout_bytes} %{cgroup}\\t100%%\\n").unwrap();
        assert_eq!(f.render(&summary), "2.00 1.50 0.50 100% 10 124 sleep 30|timeout 4096 15 x - -\t100%\n");
        let hostile = json!({"argv": ["echo", "\u{1b}[2J"], "user": {"l": "a\nb"}});
        assert_eq!(Format::parse("%C %{user.l}").unwrap().render(&hostile), "echo \\u{1b}[2J a\\nb");
    }

    #[test]
    fn bad_templates_are_refused_with_a_reason() {
        for bad in ["%q", "%", "%{nope}", "%{reason", "%{}", "%{exit.}", "\\x"] {
            let e = Format::parse(bad).unwrap_err();
            assert!(e.starts_with("--format:"), "{bad}: {e}");
        }
    }
}
