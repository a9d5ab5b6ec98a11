//! The spool: summaries not yet confirmed by the broker, kept on disk until this run, a later
//! run or `proc_boxctl flush` delivers them. One file per summary, named by its `message_id`,
//! written atomically. Whoever sends a file holds an exclusive `flock` on it from claim to
//! unlink, so two senders never send the same file, and a box killed while it waits leaves its
//! summary behind for the next one.
//!
//! Every operation goes through one directory descriptor, opened component by component
//! without following a symbolic link: a link planted anywhere on the path (where
//! `fs.protected_symlinks` is 0) cannot point a root box at a directory of someone's choosing.
//!
//! A file that failed is *deferred*: renamed to `<id>.<attempts>.<retry unix time>.deferred`,
//! so that the next pass skips it from its name alone, without opening it.

use super::link::Outgoing;
use nix::errno::Errno;
use nix::fcntl::{self, AtFlags, Flock, FlockArg, OFlag};
use nix::sys::stat::{self, Mode, SFlag};
use nix::unistd::UnlinkatFlags;
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// One node a message may be delivered through: where it was going.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Destination {
    pub host: String,
    pub port: u16,
    pub vhost: String,
}

impl std::fmt::Display for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{} (vhost {})", self.host, self.port, self.vhost)
    }
}

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
    /// The nodes of the `--uri` that spooled it: it is delivered through one of them only.
    /// Empty in files of older versions, which only `proc_boxctl flush` sends.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub brokers: Vec<Destination>,
}

impl Entry {
    pub fn new(exchange: &str, routing_key: &str, brokers: &[Destination], msg: &Outgoing) -> Entry {
        Entry {
            exchange: exchange.into(),
            routing_key: routing_key.into(),
            kind: msg.kind.clone(),
            message_id: msg.message_id.clone(),
            timestamp: msg.timestamp,
            body: msg.body.clone(),
            brokers: brokers.to_vec(),
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

    /// Whether a connection to `node` may deliver it.
    pub fn goes_to(&self, node: &Destination) -> bool {
        self.brokers.contains(node)
    }

    /// The box the summary is from, for reports.
    pub fn box_id(&self) -> String {
        serde_json::from_str::<serde_json::Value>(&self.body)
            .ok()
            .and_then(|v| v["box_id"].as_str().map(str::to_owned))
            .unwrap_or_else(|| "?".into())
    }
}

/// `$XDG_STATE_HOME/proc_box/spool`, else `/var/tmp/proc_box-<uid>/spool`.
pub fn default_dir() -> PathBuf {
    match std::env::var_os("XDG_STATE_HOME").filter(|v| Path::new(v).is_absolute()) {
        Some(state) => Path::new(&state).join("proc_box/spool"),
        None => {
            let uid = rustix::process::getuid().as_raw();
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

/// Back-off of a file that failed `attempts` times: one minute, doubling, at most an hour.
pub fn retry_delay(attempts: u32) -> Duration {
    Duration::from_secs(60u64 << attempts.saturating_sub(1).min(6)).min(Duration::from_secs(3600))
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
}

/// A spooled file as listed.
#[derive(Clone, Debug)]
pub struct Listed {
    pub name: String,
    /// When it was spooled (a rename keeps it), Unix seconds.
    pub mtime: i64,
    pub size: u64,
    /// Attempts so far and the Unix time before which it is not retried, once deferred.
    pub deferred: Option<(u32, u64)>,
}

impl Listed {
    /// Not deferred, or its back-off is over.
    pub fn due(&self, now: u64) -> bool {
        self.deferred.is_none_or(|(_, at)| at <= now)
    }
}

/// `<id>.<attempts>.<retry at>.deferred` → (attempts, retry at).
fn parse_deferred(name: &str) -> Option<(u32, u64)> {
    let rest = name.strip_suffix(".deferred")?;
    let mut it = rest.rsplitn(3, '.');
    let at = it.next()?.parse().ok()?;
    let attempts = it.next()?.parse().ok()?;
    it.next().filter(|id| !id.is_empty())?;
    Some((attempts, at))
}

/// The size bound of a spool: at most `files` files and `bytes` bytes.
#[derive(Clone, Copy, Debug)]
pub struct Bounds {
    pub files: u64,
    pub bytes: u64,
}

/// A file dropped because the spool was over its bound.
#[derive(Debug)]
pub struct Dropped {
    pub message_id: String,
    pub box_id: String,
}

/// An open spool directory, checked once and used through its descriptor.
pub struct Spool {
    dir: OwnedFd,
    path: PathBuf,
}

/// A spooled file this process holds the lock of.
pub struct Claim {
    file: Flock<File>,
    name: String,
    deferred: Option<(u32, u64)>,
}

impl Claim {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Attempts before this one.
    pub fn attempts(&self) -> u32 {
        self.deferred.map_or(0, |(n, _)| n)
    }
}

/// What claiming a file found.
pub enum Claimed {
    Mine(Claim, Entry),
    /// Another sender holds it, or it is already gone.
    Busy,
    /// Not a spool entry: renamed to `*.invalid` and left for a person.
    Invalid(String),
}

fn is_link(dir: &OwnedFd, name: &Path) -> bool {
    stat::fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW)
        .is_ok_and(|s| SFlag::from_bits_truncate(s.st_mode) & SFlag::S_IFMT == SFlag::S_IFLNK)
}

impl Spool {
    /// Opens the spool at `path`, creating what is missing (0700) when `create`; `Ok(None)`
    /// when it is missing and not created.
    ///
    /// It must belong to proc_box's user alone. Another user's directory could make a root box
    /// write where they choose, or publish, with its broker credentials, messages they put
    /// there. Refused: a symbolic link anywhere on the path; a spool of another owner or
    /// writable by others; a directory on the way that another user owns (root excepted) or
    /// may rename entries in (writable by others without the sticky bit).
    pub fn open(path: &Path, create: bool) -> io::Result<Option<Spool>> {
        let me = rustix::process::geteuid().as_raw();
        let refuse = |at: &Path, why: &str| {
            Err(io::Error::other(format!("{}: {why}; {} not used as a spool", at.display(), path.display())))
        };
        let names: Vec<&std::ffi::OsStr> = path
            .components()
            .filter_map(|c| match c {
                Component::Normal(n) => Some(n),
                Component::ParentDir => Some("..".as_ref()),
                _ => None,
            })
            .collect();
        let start = if path.is_absolute() { "/" } else { "." };
        let first = if names.is_empty() { OFlag::O_RDONLY } else { OFlag::O_PATH };
        let mut dir = fcntl::open(start, first | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())?;
        let mut at = PathBuf::from(start);
        for (i, name) in names.iter().enumerate() {
            let s = stat::fstat(&dir)?;
            let open_to_others = s.st_mode & 0o022 != 0 && s.st_mode & libc::S_ISVTX == 0;
            if (s.st_uid != me && s.st_uid != 0) || open_to_others {
                return refuse(
                    &at,
                    "another user owns it, or it is writable by others without the sticky bit",
                );
            }
            let last = i + 1 == names.len();
            let mode = if last { OFlag::O_RDONLY } else { OFlag::O_PATH };
            let flags = mode | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
            at.push(name);
            let next = match fcntl::openat(&dir, *name, flags, Mode::empty()) {
                Err(Errno::ENOENT) if create => {
                    match stat::mkdirat(&dir, *name, Mode::S_IRWXU) {
                        Ok(()) | Err(Errno::EEXIST) => {}
                        Err(e) => return Err(e.into()),
                    }
                    fcntl::openat(&dir, *name, flags, Mode::empty())
                }
                other => other,
            };
            dir = match next {
                Ok(fd) => fd,
                Err(Errno::ENOENT) => return Ok(None),
                Err(Errno::ENOTDIR | Errno::ELOOP) if is_link(&dir, Path::new(name)) => {
                    return refuse(&at, "a symbolic link")
                }
                Err(Errno::ENOTDIR) => return refuse(&at, "not a directory"),
                Err(e) => return Err(e.into()),
            };
        }
        let s = stat::fstat(&dir)?;
        if s.st_uid != me || s.st_mode & 0o022 != 0 {
            return refuse(path, "owned by another user, or writable by others");
        }
        Ok(Some(Spool { dir, path: path.to_owned() }))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Writes `entry` atomically and returns it claimed: locked before it appears under its
    /// name, so no other sender can take it while this process still tries to deliver it.
    /// Not synced: [`Spool::sync`] makes it survive a power loss, not only a killed process.
    pub fn write(&self, entry: &Entry) -> io::Result<Claim> {
        let name = file_name(&entry.message_id);
        let tmp = format!(".{name}.{}.tmp", std::process::id());
        let text = serde_json::to_string(entry).map_err(io::Error::other)?;
        let flags = OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let fd = fcntl::openat(&self.dir, tmp.as_str(), flags, Mode::S_IRUSR | Mode::S_IWUSR)?;
        let result = (|| {
            let file = Flock::lock(File::from(fd), FlockArg::LockExclusiveNonblock).map_err(|(_, e)| e)?;
            (&*file).write_all(text.as_bytes())?;
            (&*file).write_all(b"\n")?;
            fcntl::renameat(&self.dir, tmp.as_str(), &self.dir, name.as_str())?;
            Ok(Claim { file, name: name.clone(), deferred: None })
        })();
        if result.is_err() {
            let _ = nix::unistd::unlinkat(&self.dir, tmp.as_str(), UnlinkatFlags::NoRemoveDir);
        }
        result
    }

    /// Flushes a claimed file and the directory to disk.
    pub fn sync(&self, claim: &Claim) -> io::Result<()> {
        claim.file.sync_all()?;
        nix::unistd::fsync(&self.dir)?;
        Ok(())
    }

    /// The spooled files, oldest first. Deferred files are listed too (see [`Listed::due`]).
    pub fn list(&self) -> io::Result<Vec<Listed>> {
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
        let mut d = nix::dir::Dir::openat(&self.dir, ".", flags, Mode::empty())?;
        let mut files = Vec::new();
        for e in d.iter().filter_map(Result::ok) {
            let Ok(name) = e.file_name().to_str() else { continue };
            if name.starts_with('.') {
                continue;
            }
            let deferred = parse_deferred(name);
            if deferred.is_none() && !name.ends_with(".json") {
                continue;
            }
            let Ok(s) = stat::fstatat(&self.dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) else { continue };
            if SFlag::from_bits_truncate(s.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG {
                continue;
            }
            files.push(Listed { name: name.to_owned(), mtime: s.st_mtime, size: s.st_size as u64, deferred });
        }
        files.sort_by(|a, b| (a.mtime, &a.name).cmp(&(b.mtime, &b.name)));
        Ok(files)
    }

    /// Whether `name` still names the file `claim` holds (not unlinked or replaced since).
    fn still_named(&self, file: &File, name: &str) -> bool {
        match (stat::fstat(file), stat::fstatat(&self.dir, name, AtFlags::AT_SYMLINK_NOFOLLOW)) {
            (Ok(a), Ok(b)) => (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino),
            _ => false,
        }
    }

    /// Locks a listed file for sending and reads it.
    pub fn claim(&self, name: &str) -> Claimed {
        let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
        let Ok(fd) = fcntl::openat(&self.dir, name, flags, Mode::empty()) else {
            return Claimed::Busy;
        };
        let Ok(file) = Flock::lock(File::from(fd), FlockArg::LockExclusiveNonblock) else {
            return Claimed::Busy;
        };
        // The sender before may have delivered and unlinked it, or deferred it under a new name.
        if !self.still_named(&file, name) {
            return Claimed::Busy;
        }
        let mut text = String::new();
        let parsed = (&*file)
            .take(16 << 20)
            .read_to_string(&mut text)
            .map_err(|e| e.to_string())
            .and_then(|_| serde_json::from_str::<Entry>(&text).map_err(|e| e.to_string()));
        match parsed {
            Ok(entry) => {
                Claimed::Mine(Claim { file, name: name.to_owned(), deferred: parse_deferred(name) }, entry)
            }
            Err(e) => {
                let aside = format!("{name}.invalid");
                let _ = fcntl::renameat(&self.dir, name, &self.dir, aside.as_str());
                Claimed::Invalid(format!(
                    "{}: {e}; moved to {}",
                    self.file(name).display(),
                    self.file(&aside).display()
                ))
            }
        }
    }

    /// Delivered: removes the file, still holding its lock.
    pub fn done(&self, claim: Claim) -> io::Result<()> {
        if self.still_named(&claim.file, &claim.name) {
            nix::unistd::unlinkat(&self.dir, claim.name.as_str(), UnlinkatFlags::NoRemoveDir)?;
        }
        Ok(())
    }

    /// Failed once more: sets the file aside under a name that says when to retry it.
    /// Returns the attempts so far and that time.
    pub fn defer(&self, claim: Claim) -> io::Result<(u32, u64)> {
        let attempts = claim.attempts().saturating_add(1);
        let at = unix_now() + retry_delay(attempts).as_secs();
        let base = claim.name.strip_suffix(".json").map(str::to_owned).unwrap_or_else(|| {
            let rest = claim.name.strip_suffix(".deferred").unwrap_or(&claim.name);
            rest.rsplitn(3, '.').nth(2).unwrap_or(rest).to_owned()
        });
        let new = format!("{base}.{attempts}.{at}.deferred");
        if self.still_named(&claim.file, &claim.name) {
            fcntl::renameat(&self.dir, claim.name.as_str(), &self.dir, new.as_str())?;
        }
        Ok((attempts, at))
    }

    /// Drops the oldest files until the spool holds fewer than `bounds.files` files (room for
    /// one more) and at most `bounds.bytes` bytes. A file another sender holds is skipped.
    pub fn trim(&self, bounds: Bounds) -> io::Result<Vec<Dropped>> {
        let files = self.list()?;
        let mut count = files.len() as u64;
        let mut bytes: u64 = files.iter().map(|f| f.size).sum();
        let mut dropped = Vec::new();
        for f in &files {
            if count < bounds.files && bytes <= bounds.bytes {
                break;
            }
            match self.claim(&f.name) {
                Claimed::Mine(claim, entry) => {
                    nix::unistd::unlinkat(&self.dir, claim.name.as_str(), UnlinkatFlags::NoRemoveDir)?;
                    dropped.push(Dropped { box_id: entry.box_id(), message_id: entry.message_id });
                }
                Claimed::Invalid(_) => {}
                Claimed::Busy => continue,
            }
            count -= 1;
            bytes = bytes.saturating_sub(f.size);
        }
        Ok(dropped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("pbox-spool-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    fn msg(id: &str) -> Outgoing {
        Outgoing::new("summary", id.into(), "{\"box_id\":\"b\"}".into(), true)
    }

    #[test]
    fn write_claim_defer_done() {
        let dir = tmpdir("wcd");
        let spool = Spool::open(&dir.join("sub"), true).unwrap().unwrap();
        let held = spool.write(&Entry::new("ex", "k.h", &[], &msg("../../etc/x"))).unwrap();
        assert_eq!(held.name(), "_.._etc_x.json");
        let listed = spool.list().unwrap();
        assert_eq!(listed.len(), 1);
        assert!(matches!(spool.claim(&listed[0].name), Claimed::Busy), "the writer holds it");
        drop(held);
        let Claimed::Mine(claim, entry) = spool.claim(&listed[0].name) else { panic!("not claimed") };
        assert_eq!(entry.box_id(), "b");
        let (n, at) = spool.defer(claim).unwrap();
        assert_eq!(n, 1);
        let listed = spool.list().unwrap();
        assert_eq!(listed[0].deferred, Some((1, at)), "{listed:?}");
        assert!(!listed[0].due(unix_now()) && listed[0].due(at));
        let Claimed::Mine(claim, _) = spool.claim(&listed[0].name) else { panic!("not claimed") };
        assert_eq!(claim.attempts(), 1);
        assert_eq!(spool.defer(claim).unwrap().0, 2);
        let listed = spool.list().unwrap();
        assert!(listed[0].name.starts_with("_.._etc_x.2."), "{listed:?}");
        let Claimed::Mine(claim, _) = spool.claim(&listed[0].name) else { panic!("not claimed") };
        spool.done(claim).unwrap();
        assert!(spool.list().unwrap().is_empty());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn garbage_is_set_aside_not_lost() {
        let dir = tmpdir("garbage");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("x.json"), "not json").unwrap();
        let spool = Spool::open(&dir, false).unwrap().unwrap();
        assert!(matches!(spool.claim("x.json"), Claimed::Invalid(_)));
        assert!(dir.join("x.json.invalid").exists());
        assert!(spool.list().unwrap().is_empty());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn trim_drops_the_oldest_and_says_which() {
        let dir = tmpdir("trim");
        let spool = Spool::open(&dir, true).unwrap().unwrap();
        for i in 0..5 {
            drop(spool.write(&Entry::new("ex", "k", &[], &msg(&format!("m{i}")))).unwrap());
            // Distinct mtimes: the order is the spooling order.
            let t = nix::sys::time::TimeSpec::new(1_000 + i, 0);
            let f = File::open(dir.join(format!("m{i}.json"))).unwrap();
            stat::futimens(&f, &t, &t).unwrap();
        }
        let held = spool.claim("m0.json");
        let dropped = spool.trim(Bounds { files: 3, bytes: u64::MAX }).unwrap();
        let ids: Vec<_> = dropped.iter().map(|d| d.message_id.as_str()).collect();
        assert_eq!(ids, ["m1", "m2", "m3"], "the held m0 is skipped, then the oldest go");
        drop(held);
        let dropped = spool.trim(Bounds { files: 100, bytes: 1 }).unwrap();
        assert_eq!(dropped.len(), 2);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_spool_others_control_or_a_link_on_the_path_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tmpdir("open");
        fs::create_dir_all(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).unwrap();
        assert!(Spool::open(&dir, true).is_err(), "a world-writable spool");
        assert!(Spool::open(&dir.join("sub"), true).is_err(), "under a world-writable parent");
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
        let real = dir.join("real");
        fs::create_dir_all(real.join("spool")).unwrap();
        std::os::unix::fs::symlink(&real, dir.join("link")).unwrap();
        let e = Spool::open(&dir.join("link/spool"), true).err().expect("a link in the parent");
        assert!(e.to_string().contains("symbolic link"), "{e}");
        std::os::unix::fs::symlink(real.join("spool"), dir.join("direct")).unwrap();
        assert!(Spool::open(&dir.join("direct"), true).is_err(), "a symlinked spool");
        assert!(Spool::open(&dir.join("link/new"), true).is_err());
        assert!(!real.join("new").exists(), "nothing created through the link");
        assert!(Spool::open(&real.join("spool"), false).unwrap().is_some());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn missing_spool_is_none() {
        assert!(Spool::open(Path::new("/nonexistent/proc_box/spool"), false).unwrap().is_none());
    }

    #[test]
    fn deferred_names_parse() {
        assert_eq!(parse_deferred("a.b.3.1700000000.deferred"), Some((3, 1_700_000_000)));
        assert_eq!(parse_deferred("3.1700000000.deferred"), None);
        assert_eq!(retry_delay(1), Duration::from_secs(60));
        assert_eq!(retry_delay(40), Duration::from_secs(3600));
    }
}
