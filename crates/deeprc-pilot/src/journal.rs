//! An append-only journal of finished tasks: what survives the client.
//!
//! A session keeps its task records and results in memory and writes its
//! profile at [`Session::close`](crate::Session::close); a client killed in
//! the middle of a session (kill -9, an out-of-memory kill, a node
//! drained) would lose everything. A [`Journal`] attached to a task
//! manager appends one JSON line per task as it reaches a final state:
//! its id, name, state, attempts, timestamps, state transitions (the
//! task's profile events), reason and every rank's result.
//!
//! ```text
//!  task DONE/FAILED/CANCELED ──callback──> one line, one write(2), O_APPEND
//!                                          ({"id":..,"state":"DONE",..,"outputs":["68656c6c6f"]})
//!  new client ──Journal::read(path)──> entries; a torn last line is skipped and reported
//! ```
//!
//! Each line is written by a single `write` on a file opened for appending
//! (no user-space buffer), before the task manager counts the task as
//! finished: once `wait_all` returns, or a callback registered later sees
//! the task final, its line is in the file, and a process killed after that
//! cannot lose it. With [`Journal::durable`] each line is also `fsync`ed
//! (it then survives a machine crash too, at the cost of a disk flush per
//! task).
//!
//! ```
//! use deeprc_pilot::{Journal, PilotDescription, Registry, Session, TaskDescription};
//! let dir = std::env::temp_dir().join(format!("deeprc-journal-doc-{}", std::process::id()));
//! let mut reg = Registry::new();
//! reg.register("hi", |_ctx: &deeprc_pilot::TaskContext, _a: &[u8]| Ok::<_, String>(b"hi".to_vec()));
//! let session = Session::builder().registry(reg).sandbox(dir.join("s")).build()?;
//! let pilot = session.pilot_manager().submit(PilotDescription::local().cores(1))?;
//! let tm = session.task_manager();
//! tm.add_pilot(&pilot)?;
//! let journal = Journal::open(dir.join("tasks.jsonl"))?;
//! journal.attach(&tm);
//! tm.submit(TaskDescription::function("hi").name("greeting"))?;
//! tm.wait_all();
//! session.close()?;
//! // Later, in another process:
//! let read = Journal::read(dir.join("tasks.jsonl"))?;
//! assert_eq!(read.entries[0].name.as_deref(), Some("greeting"));
//! assert_eq!(read.entries[0].output(), Some(&b"hi"[..]));
//! # std::fs::remove_dir_all(&dir).ok();
//! # Ok::<(), deeprc_pilot::PilotError>(())
//! ```

use crate::{PilotError, Result, Task, TaskManager, TaskState, Timestamps};
use deeprc_core::sync::lock;
use serde::{Deserialize, Serialize};
use std::{
    fs::{File, OpenOptions},
    io::Write,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

/// One finished task, as the journal keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalEntry {
    /// The task's id in its session.
    pub id: u64,
    /// Its name, if it had one.
    pub name: Option<String>,
    /// The pilot it ran on.
    pub pilot: String,
    /// `DONE`, `FAILED` or `CANCELED`.
    pub state: String,
    /// How many attempts it made.
    pub attempts: u32,
    /// The timestamps of its last attempt.
    pub timestamps: Timestamps,
    /// Every state transition, earlier attempts included: `(state, ns)`.
    pub transitions: Vec<(String, u64)>,
    /// Why it failed (FAILED and CANCELED tasks).
    pub reason: Option<String>,
    /// The exit code of an executable's first rank.
    pub exit_code: Option<i32>,
    /// Every rank's result (function tasks), hex-encoded in the file.
    #[serde(with = "hex_outputs")]
    pub outputs: Vec<Vec<u8>>,
}

impl JournalEntry {
    fn of(task: &Task, state: TaskState) -> Self {
        JournalEntry {
            id: task.id().0,
            name: task.name().map(str::to_string),
            pilot: task.pilot().to_string(),
            state: state.as_str().to_string(),
            attempts: task.attempts(),
            timestamps: task.timestamps(),
            transitions: task
                .history()
                .into_iter()
                .map(|(s, t)| (s.as_str().to_string(), t))
                .collect(),
            reason: task.reason().map(|r| r.to_string()),
            exit_code: task.exit_code(),
            outputs: task.outputs(),
        }
    }

    /// The result of rank 0, if the task returned one.
    pub fn output(&self) -> Option<&[u8]> {
        self.outputs.first().map(Vec::as_slice)
    }

    /// `true` for a task that ended DONE.
    pub fn is_done(&self) -> bool {
        self.state == TaskState::Done.as_str()
    }
}

/// What [`Journal::read`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JournalRead {
    /// Every complete line, in the order written.
    pub entries: Vec<JournalEntry>,
    /// A last line without its newline (a writer killed in the middle of
    /// it), skipped: its bytes.
    pub torn_tail: Option<usize>,
}

/// An append-only file of finished tasks (see the module docs).
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    file: Mutex<File>,
    durable: bool,
    errors: Mutex<Vec<String>>,
}

impl Journal {
    /// Opens `path` for appending, creating it (owner-only, `0600`) if it
    /// is missing: the entries of an earlier client stay, new ones follow
    /// (a torn last line of a client killed while writing it is cut off).
    ///
    /// # Errors
    /// [`PilotError::Io`] when the file cannot be opened.
    pub fn open(path: impl Into<PathBuf>) -> Result<Arc<Journal>> {
        let path = path.into();
        let mut o = OpenOptions::new();
        o.read(true).append(true).create(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            o.mode(0o600);
        }
        let file = o
            .open(&path)
            .map_err(|e| PilotError::io(format!("opening the journal {}", path.display()), e))?;
        // A torn last line of a killed writer would glue itself to the
        // next entry: cut it off (it was never a complete entry).
        let keep = complete_len(&file)
            .map_err(|e| PilotError::io(format!("reading the journal {}", path.display()), e))?;
        file.set_len(keep)
            .map_err(|e| PilotError::io(format!("repairing the journal {}", path.display()), e))?;
        let journal = Journal {
            path,
            file: Mutex::new(file),
            durable: false,
            errors: Mutex::new(Vec::new()),
        };
        Ok(Arc::new(journal))
    }

    /// Also `fsync`s every line (survives a machine crash; slower).
    #[must_use]
    pub fn durable(self: Arc<Self>) -> Arc<Self> {
        match Arc::try_unwrap(self) {
            Ok(mut j) => {
                j.durable = true;
                Arc::new(j)
            }
            Err(shared) => shared,
        }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Journals every task of `tm` that reaches a final state from now on.
    /// A line that cannot be written is kept in [`Journal::errors`] (a
    /// callback cannot fail the task).
    pub fn attach(self: &Arc<Self>, tm: &TaskManager) {
        let me = Arc::clone(self);
        tm.register_callback(move |task, state| {
            if state.is_final() {
                if let Err(e) = me.record(task, state) {
                    lock(&me.errors).push(e.to_string());
                }
            }
        });
    }

    /// Appends `task`, final in `state`.
    ///
    /// # Errors
    /// [`PilotError::Io`] when the line cannot be written.
    pub fn record(&self, task: &Task, state: TaskState) -> Result<()> {
        let mut line = serde_json::to_vec(&JournalEntry::of(task, state)).map_err(|source| {
            PilotError::Encode {
                context: format!("encoding the journal entry of {}", task.id()),
                source,
            }
        })?;
        line.push(b'\n');
        self.append(&line)
    }

    /// The lines that could not be written.
    pub fn errors(&self) -> Vec<String> {
        lock(&self.errors).clone()
    }

    fn append(&self, bytes: &[u8]) -> Result<()> {
        let err = |e| {
            PilotError::io(
                format!("appending to the journal {}", self.path.display()),
                e,
            )
        };
        let mut f = lock(&self.file);
        // One write of the whole line: no buffer in this process.
        f.write_all(bytes).map_err(err)?;
        if self.durable {
            f.sync_data().map_err(err)?;
        }
        Ok(())
    }

    /// Reads a journal: every complete line; a last line without its
    /// newline is reported in [`JournalRead::torn_tail`], not returned.
    ///
    /// # Errors
    /// [`PilotError::Io`] when the file cannot be read;
    /// [`PilotError::Encode`] naming the line of a complete line that is
    /// not an entry.
    pub fn read(path: impl AsRef<Path>) -> Result<JournalRead> {
        let path = path.as_ref();
        let bytes = std::fs::read(path)
            .map_err(|e| PilotError::io(format!("reading the journal {}", path.display()), e))?;
        let (complete, torn) = match bytes.iter().rposition(|&b| b == b'\n') {
            Some(i) => (&bytes[..=i], bytes.len() - i - 1),
            None => (&bytes[..0], bytes.len()),
        };
        let mut entries = Vec::new();
        for (i, line) in complete.split(|&b| b == b'\n').enumerate() {
            if line.is_empty() {
                continue;
            }
            match serde_json::from_slice::<JournalEntry>(line) {
                Ok(e) => entries.push(e),
                Err(source) => {
                    return Err(PilotError::Encode {
                        context: format!("journal {} line {}", path.display(), i + 1),
                        source,
                    })
                }
            }
        }
        Ok(JournalRead {
            entries,
            torn_tail: (torn > 0).then_some(torn),
        })
    }
}

/// The length of `file` up to and with its last newline.
fn complete_len(file: &File) -> std::io::Result<u64> {
    use std::os::unix::fs::FileExt;
    let len = file.metadata()?.len();
    let mut end = len;
    let mut buf = vec![0u8; 64 << 10];
    while end > 0 {
        let start = end.saturating_sub(buf.len() as u64);
        let chunk = &mut buf[..(end - start) as usize];
        file.read_exact_at(chunk, start)?;
        if let Some(i) = chunk.iter().rposition(|&b| b == b'\n') {
            return Ok(start + i as u64 + 1);
        }
        end = start;
    }
    Ok(0)
}

/// Results as hex strings: JSON has no bytes, and an array of numbers is
/// four times as long.
mod hex_outputs {
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(v: &[Vec<u8>], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(|b| {
            b.iter()
                .fold(String::with_capacity(2 * b.len()), |mut o, x| {
                    o.push(char::from(b"0123456789abcdef"[usize::from(x >> 4)]));
                    o.push(char::from(b"0123456789abcdef"[usize::from(x & 15)]));
                    o
                })
        }))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Vec<u8>>, D::Error> {
        let hex = Vec::<String>::deserialize(d)?;
        hex.iter()
            .map(|h| {
                if h.len() % 2 != 0 {
                    return Err(D::Error::custom("odd hex length"));
                }
                (0..h.len())
                    .step_by(2)
                    .map(|i| {
                        u8::from_str_radix(&h[i..i + 2], 16)
                            .map_err(|_| D::Error::custom("not hex"))
                    })
                    .collect()
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: u64) -> JournalEntry {
        JournalEntry {
            id,
            name: Some(format!("t{id}")),
            pilot: "pilot.0000".into(),
            state: "DONE".into(),
            attempts: 1,
            timestamps: Timestamps::default(),
            transitions: vec![("NEW".into(), 1), ("DONE".into(), 2)],
            reason: None,
            exit_code: None,
            outputs: vec![vec![0, 1, 0xfe, 0xff], Vec::new()],
        }
    }

    #[test]
    fn torn_lines_are_skipped_and_the_next_writer_cuts_them_off() {
        let dir = std::env::temp_dir().join(format!("deeprc-journal-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("j.jsonl");
        let _ = std::fs::remove_file(&path);
        let mut bytes = Vec::new();
        for id in 0..3 {
            bytes.extend(serde_json::to_vec(&entry(id)).unwrap());
            bytes.push(b'\n');
        }
        let torn = serde_json::to_vec(&entry(3)).unwrap();
        bytes.extend_from_slice(&torn[..torn.len() / 2]);
        std::fs::write(&path, &bytes).unwrap();
        let r = Journal::read(&path).unwrap();
        assert_eq!(r.entries, (0..3).map(entry).collect::<Vec<_>>());
        assert_eq!(r.torn_tail, Some(torn.len() / 2));
        // A new writer cuts the torn line off; its own entries follow.
        let j = Journal::open(&path).unwrap();
        let mut line = serde_json::to_vec(&entry(4)).unwrap();
        line.push(b'\n');
        j.append(&line).unwrap();
        let r = Journal::read(&path).unwrap();
        let ids: Vec<u64> = r.entries.iter().map(|e| e.id).collect();
        assert_eq!(ids, vec![0, 1, 2, 4]);
        assert_eq!(r.torn_tail, None);
        // A complete line that is not an entry is an error naming it.
        std::fs::write(&path, b"{\"id\":1}\n").unwrap();
        let e = Journal::read(&path).unwrap_err().to_string();
        assert!(e.contains("line 1"), "{e}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
