//! The spool: summaries the broker did not confirm in time, kept on disk until a later run (or
//! `proc_boxctl flush`) delivers them. One file per summary, named by its `message_id`, written
//! atomically; a sender holds an exclusive `flock` while it delivers and unlinks, so two
//! flushers never send the same file twice.

use super::link::Outgoing;
use serde::{Deserialize, Serialize};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// What a spooled file holds: the message and where it was going.
#[derive(Debug, Serialize, Deserialize)]
pub struct Entry {
    pub exchange: String,
    pub routing_key: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub message_id: String,
    pub timestamp: u64,
    /// The message body, as sent.
    pub body: String,
}

impl Entry {
    pub fn new(exchange: &str, routing_key: &str, msg: &Outgoing) -> Entry {
        Entry {
            exchange: exchange.into(),
            routing_key: routing_key.into(),
            kind: msg.kind.clone(),
            message_id: msg.message_id.clone(),
            timestamp: msg.timestamp,
            body: msg.body.clone(),
        }
    }

    pub fn outgoing(&self) -> Outgoing {
        Outgoing {
            kind: self.kind.clone(),
            message_id: self.message_id.clone(),
            body: self.body.clone(),
            timestamp: self.timestamp,
            persistent: true,
        }
    }
}

/// `$XDG_STATE_HOME/proc_box/spool`, else `/var/tmp/proc_box-<uid>/spool`.
pub fn default_dir() -> PathBuf {
    match std::env::var_os("XDG_STATE_HOME").filter(|v| Path::new(v).is_absolute()) {
        Some(state) => Path::new(&state).join("proc_box/spool"),
        None => {
            // SAFETY: getuid has no preconditions and cannot fail.
            let uid = unsafe { libc::getuid() };
            PathBuf::from(format!("/var/tmp/proc_box-{uid}/spool"))
        }
    }
}

/// A file name from a message id: only `[A-Za-z0-9._-]` survive, so an id cannot climb out.
fn file_name(message_id: &str) -> String {
    let safe: String = message_id
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') { c } else { '_' })
        .collect();
    format!("{}.json", safe.trim_start_matches('.'))
}

/// The spool must belong to proc_box's user alone. Another user's directory (say a planted
/// `/var/tmp/proc_box-0`) could make a root box write where they choose, or publish, with its
/// broker credentials, messages they put there. Refused: a symlink, a directory of another
/// owner or writable by others, and a parent that others may rename it in (writable by others
/// and not sticky, or owned by someone other than us or root).
fn trusted(dir: &Path) -> io::Result<()> {
    // SAFETY: geteuid cannot fail.
    let me = unsafe { libc::geteuid() };
    let refuse = |why: &str| Err(io::Error::other(format!("{}: {why}; not used as a spool", dir.display())));
    let m = fs::symlink_metadata(dir)?;
    if !m.is_dir() {
        return refuse("not a directory");
    }
    if m.uid() != me || m.mode() & 0o022 != 0 {
        return refuse("owned by another user, or writable by others");
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        let p = fs::metadata(parent)?;
        let open = p.mode() & 0o022 != 0 && p.mode() & libc::S_ISVTX == 0;
        if (p.uid() != me && p.uid() != 0) || open {
            return refuse("its parent directory is another user's, or open to all without the sticky bit");
        }
    }
    Ok(())
}

/// Writes `entry` into `dir` (created 0700 if missing) atomically; returns its path.
pub fn write(dir: &Path, entry: &Entry) -> io::Result<PathBuf> {
    fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    trusted(dir)?;
    let path = dir.join(file_name(&entry.message_id));
    let tmp = dir.join(format!(".{}.{}.tmp", file_name(&entry.message_id), std::process::id()));
    let text = serde_json::to_string(entry).map_err(io::Error::other)?;
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.write_all(b"\n")?;
        f.sync_all()?;
        fs::rename(&tmp, &path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map(|()| path)
}

/// The spooled files in `dir`, oldest first. A missing directory is an empty spool.
pub fn pending(dir: &Path) -> io::Result<Vec<PathBuf>> {
    match trusted(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        other => other?,
    }
    let entries = fs::read_dir(dir)?;
    let mut files: Vec<(i64, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.ends_with(".json") && !name.starts_with('.')
        })
        .filter_map(|e| Some((e.metadata().ok()?.mtime(), e.path())))
        .collect();
    files.sort();
    Ok(files.into_iter().map(|(_, p)| p).collect())
}

/// A spooled file this process holds the lock of.
pub struct Claim {
    file: File,
    path: PathBuf,
}

/// What claiming a file found.
pub enum Claimed {
    Mine(Claim, Entry),
    /// Another sender holds it, or it is already gone.
    Busy,
    /// Not a spool entry: renamed to `*.invalid` and left for a person.
    Invalid(String),
}

/// Locks `path` for sending. The link count is checked after the lock: a file unlinked by
/// the sender that held the lock before is not sent again.
pub fn claim(path: &Path) -> Claimed {
    let Ok(mut file) =
        OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK).open(path)
    else {
        return Claimed::Busy;
    };
    // SAFETY: flock on a descriptor this function owns.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Claimed::Busy;
    }
    match file.metadata() {
        Ok(m) if m.nlink() > 0 && m.is_file() => {}
        _ => return Claimed::Busy,
    }
    let mut text = String::new();
    let parsed = Read::by_ref(&mut file)
        .take(16 << 20)
        .read_to_string(&mut text)
        .map_err(|e| e.to_string())
        .and_then(|_| serde_json::from_str::<Entry>(&text).map_err(|e| e.to_string()));
    match parsed {
        Ok(entry) => Claimed::Mine(Claim { file, path: path.to_owned() }, entry),
        Err(e) => {
            let mut aside = path.as_os_str().to_owned();
            aside.push(".invalid");
            let _ = fs::rename(path, &aside);
            Claimed::Invalid(format!("{}: {e}; moved to {}", path.display(), Path::new(&aside).display()))
        }
    }
}

impl Claim {
    /// Delivered: remove the file while still holding the lock.
    pub fn done(self) -> io::Result<()> {
        let r = fs::remove_file(&self.path);
        drop(self.file);
        r
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("pbox-spool-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn write_claim_done() {
        let dir = tmpdir("wcd");
        let msg = Outgoing::new("summary", "../../etc/x".into(), "{\"a\":1}".into(), true);
        let path = write(&dir.join("sub"), &Entry::new("ex", "k.h", &msg)).unwrap();
        assert_eq!(path.parent().unwrap(), dir.join("sub"));
        assert_eq!(pending(&dir.join("sub")).unwrap(), vec![path.clone()]);
        let Claimed::Mine(claim, entry) = claim(&path) else { panic!("not claimed") };
        assert_eq!(entry.body, "{\"a\":1}");
        assert!(matches!(super::claim(&path), Claimed::Busy), "a second claim must fail while locked");
        claim.done().unwrap();
        assert!(pending(&dir.join("sub")).unwrap().is_empty());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn garbage_is_set_aside_not_lost() {
        let dir = tmpdir("garbage");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("x.json"), "not json").unwrap();
        assert!(matches!(claim(&dir.join("x.json")), Claimed::Invalid(_)));
        assert!(dir.join("x.json.invalid").exists());
        assert!(pending(&dir).unwrap().is_empty());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_spool_others_control_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tmpdir("open");
        fs::create_dir_all(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).unwrap();
        let msg = Outgoing::new("summary", "x".into(), "{}".into(), true);
        assert!(write(&dir, &Entry::new("ex", "k", &msg)).is_err(), "a world-writable spool");
        assert!(pending(&dir).is_err());
        let link = tmpdir("link");
        std::os::unix::fs::symlink(&dir, &link).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
        assert!(pending(&link).is_err(), "a symlinked spool");
        assert!(pending(&dir).is_ok());
        fs::remove_file(&link).unwrap();
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn missing_spool_is_empty() {
        assert!(pending(Path::new("/nonexistent/proc_box/spool")).unwrap().is_empty());
    }
}
