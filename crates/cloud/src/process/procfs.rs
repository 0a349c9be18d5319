//! Processes as `/proc` shows them: a process's start time (to tell it from
//! a later process that reuses its PID), whether it is alive, and an
//! instance's process tree — the top process, its process group, and their
//! descendants — to signal.
//!
//! Not here: spawning (the runtime's), and any process the cloud did not
//! start: every PID signalled here is found from an instance's top process
//! or its uid.

use std::collections::{BTreeSet, HashMap};
use std::fs;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// One line of `/proc/PID/stat`, the fields after the command name.
struct Stat {
    state: char,
    ppid: u32,
    pgid: u32,
    start_time: u64,
}

fn stat(pid: u32) -> Option<Stat> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold anything: split
    // after its last ')'. Fields from there on are 3, 4, 5, ...
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(Stat {
        state: fields.first()?.chars().next()?,
        ppid: fields.get(1)?.parse().ok()?,
        pgid: fields.get(2)?.parse().ok()?,
        start_time: fields.get(19)?.parse().ok()?,
    })
}

/// The process's start time (`/proc/PID/stat` field 22, clock ticks since
/// boot), if it exists.
pub fn start_time(pid: u32) -> Option<u64> {
    stat(pid).map(|s| s.start_time)
}

/// Whether the process `pid` that started at `start` is still running (a
/// zombie is not).
pub fn alive(pid: u32, start: u64) -> bool {
    stat(pid).is_some_and(|s| s.start_time == start && !matches!(s.state, 'Z' | 'X'))
}

/// The processes of an instance: `top` (if it is still the process that
/// started at `start`), the members of its process group, and their
/// descendants.
pub fn instance_tree(top: Option<(u32, u64)>) -> BTreeSet<u32> {
    let mut table: HashMap<u32, Stat> = HashMap::new();
    if let Ok(dir) = fs::read_dir("/proc") {
        for entry in dir.flatten() {
            if let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) {
                if let Some(s) = stat(pid) {
                    if !matches!(s.state, 'Z' | 'X') {
                        table.insert(pid, s);
                    }
                }
            }
        }
    }
    let mut out = BTreeSet::new();
    if let Some((pid, start)) = top {
        if table.get(&pid).is_some_and(|s| s.start_time == start) {
            out.insert(pid);
        }
        // Its process group outlives it (the kernel does not reuse a PID
        // while a group of that id exists), so a dead top process still
        // names the processes it left behind.
        out.extend(table.iter().filter(|(_, s)| s.pgid == pid).map(|(p, _)| *p));
        // Descendants, to a fixed point.
        loop {
            let before = out.len();
            for (p, s) in &table {
                if out.contains(&s.ppid) {
                    out.insert(*p);
                }
            }
            if out.len() == before {
                break;
            }
        }
    }
    out
}

/// Sends `signal` to each of `pids`, ignoring those already gone.
pub fn signal_all(pids: &BTreeSet<u32>, signal: Signal) {
    for pid in pids {
        if let Ok(pid) = i32::try_from(*pid) {
            // ESRCH (gone since it was listed) is what we wanted anyway.
            let _ = kill(Pid::from_raw(pid), signal);
        }
    }
}

/// The real uids of every process on the host.
pub fn uids_in_use() -> BTreeSet<u32> {
    let mut uids = BTreeSet::new();
    if let Ok(dir) = fs::read_dir("/proc") {
        for entry in dir.flatten() {
            if entry
                .file_name()
                .to_str()
                .is_some_and(|n| n.parse::<u32>().is_ok())
            {
                if let Some(uid) = fs::read_to_string(entry.path().join("status"))
                    .ok()
                    .and_then(|text| uid_field(&text, 0))
                {
                    uids.insert(uid);
                }
            }
        }
    }
    uids
}

/// The effective uid of this process.
pub fn effective_uid() -> Option<u32> {
    uid_field(&fs::read_to_string("/proc/self/status").ok()?, 1)
}

/// The `Uid:` line of `/proc/PID/status`: field 0 real, 1 effective.
fn uid_field(status: &str, field: usize) -> Option<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|rest| rest.split_whitespace().nth(field))
        .and_then(|uid| uid.parse().ok())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn own_process_is_alive_with_its_start_time() {
        let me = std::process::id();
        let start = start_time(me).unwrap();
        assert!(alive(me, start));
        assert!(!alive(me, start + 1));
        assert!(effective_uid().is_some());
    }
}
