//! Processes as `/proc` shows them: a process's start time (to tell it from
//! a later process that reuses its PID), whether it is alive, an
//! instance's process tree — the top process, its process group, and their
//! descendants — to signal, and the CPU times of every process (one scan
//! of `/proc` serves every instance) with the PID namespaces they are in,
//! for the runtime's CPU accounting.
//!
//! Not here: spawning (the runtime's), and any process the cloud did not
//! start: every PID signalled here is found from an instance's top process
//! or its uid.

use std::collections::{BTreeSet, HashMap};
use std::fs;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// One line of `/proc/PID/stat`, the fields after the command name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    pub state: char,
    pub ppid: u32,
    pub pgid: u32,
    /// Clock ticks since boot.
    pub start_time: u64,
    /// utime + stime: clock ticks the process itself ran.
    pub cpu: u64,
    /// cutime + cstime: clock ticks of its children that it waited for
    /// (theirs and, recursively, their own waited-for children's).
    pub children_cpu: u64,
}

impl Stat {
    /// Neither running nor able to run again: its CPU times are final.
    pub fn is_dead(&self) -> bool {
        matches!(self.state, 'Z' | 'X')
    }
}

/// Parses the text of `/proc/PID/stat` (proc(5)).
pub fn parse_stat(text: &str) -> Option<Stat> {
    // The command name is in parentheses and may hold anything: split
    // after its last ')'. Fields from there on are 3, 4, 5, ...
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let number = |field: usize| -> Option<u64> { fields.get(field - 3)?.parse().ok() };
    Some(Stat {
        state: fields.first()?.chars().next()?,
        ppid: fields.get(1)?.parse().ok()?,
        pgid: fields.get(2)?.parse().ok()?,
        start_time: number(22)?,
        cpu: number(14)?.saturating_add(number(15)?),
        children_cpu: number(16)?.saturating_add(number(17)?),
    })
}

fn stat(pid: u32) -> Option<Stat> {
    parse_stat(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Every process on the host, zombies included, by PID: one scan of
/// `/proc`.
pub fn process_table() -> HashMap<u32, Stat> {
    let mut table = HashMap::new();
    if let Ok(dir) = fs::read_dir("/proc") {
        for entry in dir.flatten() {
            if let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) {
                // Gone since the listing: not in the table.
                if let Some(s) = stat(pid) {
                    table.insert(pid, s);
                }
            }
        }
    }
    table
}

/// The PID namespace `pid` is in (`for_children`: the one its children
/// will be in, which differs after it called `unshare(CLONE_NEWPID)`), as
/// the inode of the `/proc/PID/ns/pid[_for_children]` link's target
/// (`pid:[4026531836]`).
pub fn pid_namespace(pid: u32, for_children: bool) -> Option<u64> {
    let link = if for_children {
        "pid_for_children"
    } else {
        "pid"
    };
    let target = fs::read_link(format!("/proc/{pid}/ns/{link}")).ok()?;
    target
        .to_str()?
        .strip_prefix("pid:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// Clock ticks per second, the unit of `/proc/PID/stat`'s CPU times
/// (`sysconf(_SC_CLK_TCK)`; 100 if it cannot be read, as on every Linux
/// this runs on).
pub fn clock_ticks_per_second() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .and_then(|t| u64::try_from(t).ok())
        .filter(|t| *t > 0)
        .unwrap_or(100)
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
    let mut table = process_table();
    table.retain(|_, s| !s.is_dead());
    match top {
        Some(top) => tree_in(&table, top),
        None => BTreeSet::new(),
    }
}

/// The tree of `top` (PID, start time) in `table`: the top process if it
/// is still that process, its process group, and their descendants.
pub fn tree_in(table: &HashMap<u32, Stat>, top: (u32, u64)) -> BTreeSet<u32> {
    let (pid, start) = top;
    let mut out = BTreeSet::new();
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
        for (p, s) in table {
            if out.contains(&s.ppid) {
                out.insert(*p);
            }
        }
        if out.len() == before {
            break;
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
    fn stat_lines_parse_with_any_command_name() {
        // Fields 14–17 (utime, stime, cutime, cstime) and 22 (starttime).
        let line = "4242 (a (b) c) R 1 4242 4242 0 -1 4194304 100 0 0 0 \
                    250 50 7 3 20 0 1 0 987654 1000000 100 18446744073709551615";
        let s = parse_stat(line).unwrap();
        assert_eq!(
            s,
            Stat {
                state: 'R',
                ppid: 1,
                pgid: 4242,
                start_time: 987_654,
                cpu: 300,
                children_cpu: 10,
            }
        );
        assert!(!s.is_dead());
        assert!(parse_stat("4242 (short) R 1 2").is_none());
    }

    #[test]
    fn the_table_has_this_process_and_its_namespace() {
        let me = std::process::id();
        let table = process_table();
        assert_eq!(table[&me].start_time, start_time(me).unwrap());
        assert!(pid_namespace(me, false).is_some());
        assert!(clock_ticks_per_second() >= 1);
    }

    #[test]
    fn own_process_is_alive_with_its_start_time() {
        let me = std::process::id();
        let start = start_time(me).unwrap();
        assert!(alive(me, start));
        assert!(!alive(me, start + 1));
        assert!(effective_uid().is_some());
    }
}
