//! Is a lock holder on this host still alive? Answered from `/proc` alone
//! (no libc, no signals): the host's name and boot id, and a process's start
//! time, which together tell a live holder from a dead one whose PID was
//! reused.
//!
//! This module only ever answers "provably dead" or "maybe alive": whenever
//! it cannot read something (another host, no `/proc`, permission denied) the
//! holder counts as alive and only its lease expiry can free the lock.

use std::io::ErrorKind;

use crate::lock::HolderInfo;

/// The identity of the machine we run on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LocalHost {
    /// Hostname, empty when unreadable.
    pub hostname: String,
    /// Kernel boot id, empty when unreadable.
    pub boot_id: String,
}

fn read_trimmed(path: &str) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_owned())
}

/// Reads this machine's hostname and boot id.
pub(crate) fn local_host() -> LocalHost {
    LocalHost {
        hostname: read_trimmed("/proc/sys/kernel/hostname")
            .or_else(|| read_trimmed("/etc/hostname"))
            .unwrap_or_default(),
        boot_id: read_trimmed("/proc/sys/kernel/random/boot_id").unwrap_or_default(),
    }
}

/// What `/proc/<pid>/stat` says about a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ProcStat {
    /// Field 3: R, S, D, Z (zombie), X (dead), ...
    state: char,
    /// Field 22: start time in clock ticks since boot.
    started: u64,
}

/// Parses `/proc/<pid>/stat`. Field 2 (the command name) is in parentheses
/// and may itself hold spaces and parentheses, so fields are counted from
/// the *last* `)`.
fn parse_stat(text: &str) -> Option<ProcStat> {
    let after_comm = &text[text.rfind(')')? + 1..];
    let mut fields = after_comm.split_whitespace();
    // Fields from 3 on: state is field 3, starttime field 22.
    let state = fields.next()?.chars().next()?;
    let started = fields.nth(22 - 4)?.parse().ok()?;
    Some(ProcStat { state, started })
}

enum ProcLookup {
    /// `/proc/<pid>` does not exist: no such process.
    Missing,
    Found(ProcStat),
    /// Could not tell (no `/proc`, permission, unparsable).
    Unknown,
}

fn read_stat(pid: u32) -> ProcLookup {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(text) => parse_stat(&text).map_or(ProcLookup::Unknown, ProcLookup::Found),
        Err(e) if e.kind() == ErrorKind::NotFound => ProcLookup::Missing,
        Err(_) => ProcLookup::Unknown,
    }
}

/// The start time (clock ticks since boot) of process `pid`, if readable.
pub(crate) fn process_start(pid: u32) -> Option<u64> {
    match read_stat(pid) {
        ProcLookup::Found(stat) => Some(stat.started),
        ProcLookup::Missing | ProcLookup::Unknown => None,
    }
}

/// Whether `holder` is provably dead, judged from `local`, this machine.
/// True only for a holder on this host (same hostname) that was started
/// before a reboot, or whose process is gone, a zombie, or a different
/// process now wearing the same PID.
pub(crate) fn holder_is_dead(holder: &HolderInfo, local: &LocalHost) -> bool {
    if holder.host.is_empty() || holder.host != local.hostname {
        return false;
    }
    // Without /proc we cannot tell a missing process from an unreadable
    // one; only the lease can free the lock then.
    if !matches!(read_stat(std::process::id()), ProcLookup::Found(_)) {
        return false;
    }
    if !holder.boot_id.is_empty() && !local.boot_id.is_empty() && holder.boot_id != local.boot_id {
        return true;
    }
    match read_stat(holder.pid) {
        ProcLookup::Missing => true,
        ProcLookup::Found(stat) => {
            matches!(stat.state, 'Z' | 'X')
                || (holder.started != 0 && stat.started != holder.started)
        }
        ProcLookup::Unknown => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_awkward_command_names() {
        let line = "1234 (we (ird) name) S 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10 \
                    18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0";
        assert_eq!(
            parse_stat(line),
            Some(ProcStat {
                state: 'S',
                started: 987654
            })
        );
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(parse_stat("1 (x) S 1 2"), None);
    }

    #[test]
    fn our_own_process_is_alive_and_has_a_start_time() {
        let me = HolderInfo::current("test");
        assert!(me.started > 0, "no /proc/self/stat on this machine?");
        assert!(!me.host.is_empty());
        assert!(!holder_is_dead(&me, &local_host()));
    }

    #[test]
    fn a_holder_from_before_a_reboot_is_dead() {
        let mut me = HolderInfo::current("test");
        me.boot_id = "00000000-0000-0000-0000-000000000000".into();
        assert!(holder_is_dead(&me, &local_host()));
    }

    #[test]
    fn a_holder_on_another_host_is_never_judged_dead() {
        let mut other = HolderInfo::current("test");
        other.host = "some-other-host.invalid".into();
        other.pid = u32::MAX;
        assert!(!holder_is_dead(&other, &local_host()));
    }
}
