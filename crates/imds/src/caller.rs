//! Who is calling: the [`Caller`] of a request, taken from its TCP connection
//! — the listener's address, the peer's address, and the uid owning the
//! peer's socket, found in the kernel's socket tables (`/proc/net/tcp`,
//! `/proc/net/tcp6`).
//!
//! This module identifies; it does not decide. Mapping a caller to an
//! instance is the [`MetadataSource`](crate::MetadataSource)'s job, and
//! refusing is the service's.
//!
//! The uid lookup only works when the client runs on this host in the same
//! network namespace as the service (the socket tables are per namespace);
//! otherwise it finds nothing and the caller's uid is `None`.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use axum::extract::connect_info::Connected;
use axum::serve::IncomingStream;
use tokio::net::TcpListener;

/// The calling end of one connection to the metadata service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Caller {
    /// The address the service accepted the connection on (its listener's
    /// address: with one listener per instance, this names the instance the
    /// listener serves).
    pub local: SocketAddr,
    /// The client's address.
    pub peer: SocketAddr,
    /// The uid owning the client's socket, when the kernel's socket table
    /// shows it (see [`peer_uid`]).
    pub uid: Option<u32>,
}

impl Caller {
    /// The caller of a connection between `local` (the service's end) and
    /// `peer` (the client's end), its uid looked up in `/proc/net/tcp*`.
    pub fn from_connection(local: SocketAddr, peer: SocketAddr) -> Self {
        Self {
            local,
            peer,
            uid: peer_uid(local, peer),
        }
    }
}

impl Connected<IncomingStream<'_, TcpListener>> for Caller {
    /// Runs once per accepted connection, on the accept loop. Reading the
    /// socket table is a read of a kernel-generated file (no disk): it costs
    /// microseconds per thousand sockets, cheap enough not to hand to a
    /// blocking thread.
    fn connect_info(stream: IncomingStream<'_, TcpListener>) -> Self {
        let peer = *stream.remote_addr();
        match stream.io().local_addr() {
            Ok(local) => Self::from_connection(local, peer),
            // The socket was just accepted; if the kernel cannot name its
            // local end, no instance can be matched to it either: an
            // unspecified local address maps to nothing and is refused.
            Err(_) => Self {
                local: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
                peer,
                uid: None,
            },
        }
    }
}

/// The uid owning the client's socket of the TCP connection whose service
/// end is `local` and client end is `peer`, read from `/proc/net/tcp` and
/// `/proc/net/tcp6`. `None` when neither table lists that socket (the client
/// is in another network namespace or on another host, or has already
/// closed) or the tables cannot be read.
pub fn peer_uid(local: SocketAddr, peer: SocketAddr) -> Option<u32> {
    ["/proc/net/tcp", "/proc/net/tcp6"].iter().find_map(|path| {
        let table = std::fs::read_to_string(path).ok()?;
        find_socket_uid(&table, peer, local)
    })
}

/// State code of a socket in TIME_WAIT.
const TIME_WAIT: &str = "06";
/// State code of a listening socket.
const LISTEN: &str = "0A";

/// The uid of the socket whose local address is `socket_local` and remote
/// address is `socket_remote` in `table`, the text of `/proc/net/tcp` or
/// `/proc/net/tcp6`. IPv4-mapped IPv6 addresses match their IPv4 form.
///
/// Skipped: listening sockets, and sockets no process holds any more —
/// TIME_WAIT rows and orphans (a client that closed leaves its socket in
/// FIN_WAIT2 with inode 0) — because the kernel shows those as owned by
/// uid 0, which would name root as the caller. Lines that do not parse are
/// ignored.
pub fn find_socket_uid(
    table: &str,
    socket_local: SocketAddr,
    socket_remote: SocketAddr,
) -> Option<u32> {
    let want = (canonical(socket_local), canonical(socket_remote));
    table.lines().skip(1).find_map(|line| {
        let row = parse_row(line)?;
        let held = row.inode != 0 && row.state != TIME_WAIT && row.state != LISTEN;
        (held && (row.local, row.remote) == want).then_some(row.uid)
    })
}

/// The addresses something listens on, from a socket table's text
/// (`/proc/net/tcp` or `/proc/net/tcp6`).
pub fn listening_addresses(table: &str) -> BTreeSet<IpAddr> {
    table
        .lines()
        .skip(1)
        .filter_map(parse_row)
        .filter(|row| row.state == LISTEN)
        .map(|row| row.local.ip())
        .collect()
}

/// The addresses anything on this host (in this network namespace)
/// listens on: how the built-in cloud tells an address another cloud's
/// instance already uses.
pub fn listening_on_host() -> BTreeSet<IpAddr> {
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|path| std::fs::read_to_string(path).ok())
        .flat_map(|table| listening_addresses(&table))
        .collect()
}

/// One row of a socket table, the columns we read.
struct SocketRow<'a> {
    local: SocketAddr,
    remote: SocketAddr,
    state: &'a str,
    uid: u32,
    inode: u64,
}

/// Columns: `sl local_address rem_address st tx_queue:rx_queue tr:tm->when
/// retrnsmt uid timeout inode ...`.
fn parse_row(line: &str) -> Option<SocketRow<'_>> {
    let mut fields = line.split_whitespace();
    let _slot = fields.next()?;
    let local = parse_socket_addr(fields.next()?)?;
    let remote = parse_socket_addr(fields.next()?)?;
    let state = fields.next()?;
    let uid = fields.nth(3)?.parse().ok()?;
    let _timeout = fields.next()?;
    let inode = fields.next()?.parse().ok()?;
    Some(SocketRow {
        local: canonical(local),
        remote: canonical(remote),
        state,
        uid,
        inode,
    })
}

/// `0100007F:1F90` (IPv4) or 32 hex digits `:PORT` (IPv6). The kernel prints
/// each 32-bit word of the address as a native-endian integer, so the
/// word's bytes in memory order — `to_ne_bytes` of the parsed value — are
/// the address's bytes in network order.
fn parse_socket_addr(text: &str) -> Option<SocketAddr> {
    let (addr, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |i: usize| -> Option<[u8; 4]> {
        let hex = addr.get(i * 8..i * 8 + 8)?;
        Some(u32::from_str_radix(hex, 16).ok()?.to_ne_bytes())
    };
    let ip = match addr.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(0)?)),
        32 => {
            let mut bytes = [0u8; 16];
            for (i, chunk) in bytes.chunks_exact_mut(4).enumerate() {
                chunk.copy_from_slice(&word(i)?);
            }
            IpAddr::V6(Ipv6Addr::from(bytes))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// IPv4-mapped IPv6 addresses as IPv4, so a dual-stack socket's row matches
/// the IPv4 address the other end sees.
fn canonical(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), addr.port()),
            None => addr,
        },
        IpAddr::V4(_) => addr,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Captured from /proc/net/tcp on x86_64 Linux (little-endian), root
    // serving on 127.0.0.1:43561 and uid 65534 connected from
    // 127.0.0.2:36621: the listener, the service's end (uid 0), the
    // client's end (uid 65534). Then two rows of sockets nobody holds: the
    // same client's row captured after it closed (FIN_WAIT2, uid 0, inode
    // 0), its port changed to 36622 so that both captures fit one table,
    // and a TIME_WAIT row from another capture.
    const TCP: &str = "\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:AA29 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 94226 1 000000003de4251b 100 0 0 10 0
 104: 0100007F:AA29 0200007F:8F0D 01 00000000:00000000 00:00000000 00000000     0        0 93473 1 00000000f4962942 20 0 0 10 -1
 122: 0200007F:8F0D 0100007F:AA29 01 00000000:00000000 00:00000000 00000000 65534        0 94235 2 000000009953241b 20 0 0 10 -1
 123: 0200007F:8F0E 0100007F:AA29 05 00000000:00000000 03:00001765 00000000     0        0 0 3 00000000bc106d76
   1: 0100007F:9CD7 0100007F:E8CE 06 00000000:00000000 03:00000E1D 00000000     0        0 0 3 000000008a056011
";

    // Captured from /proc/net/tcp6: an IPv6 listener on [::1]:41839, a
    // client [::1]:53740 connected to it, and a dual-stack client socket
    // ([::ffff:127.0.0.1]:48400) connected to the IPv4 service on
    // 127.0.0.1:39603. All owned by root here.
    const TCP6: &str = "\
  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000001000000:A36F 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 93383 1 00000000a7138117 100 0 0 10 0
   1: 0000000000000000FFFF00000100007F:BD10 0000000000000000FFFF00000100007F:9AB3 01 00000000:00000000 00:00000000 00000000     0        0 93386 2 000000003daeb7c0 20 0 0 10 -1
   2: 00000000000000000000000001000000:D1EC 00000000000000000000000001000000:A36F 01 00000000:00000000 00:00000000 00000000     0        0 93384 2 0000000076989a73 20 0 0 10 -1
   3: 00000000000000000000000001000000:A36F 00000000000000000000000001000000:D1EC 01 00000000:00000000 00:00000000 00000000     0        0 93385 1 00000000292a4a44 20 0 0 10 -1
";

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn finds_the_client_socket_owner() {
        let uid = find_socket_uid(TCP, addr("127.0.0.2:36621"), addr("127.0.0.1:43561"));
        assert_eq!(uid, Some(65534));
    }

    #[test]
    fn the_service_end_is_a_different_row() {
        let uid = find_socket_uid(TCP, addr("127.0.0.1:43561"), addr("127.0.0.2:36621"));
        assert_eq!(uid, Some(0));
    }

    #[test]
    fn sockets_nobody_holds_are_skipped() {
        // Orphaned FIN_WAIT2: the client closed; uid 0 would mean root.
        assert_eq!(
            find_socket_uid(TCP, addr("127.0.0.2:36622"), addr("127.0.0.1:43561")),
            None
        );
        // TIME_WAIT.
        assert_eq!(
            find_socket_uid(TCP, addr("127.0.0.1:40151"), addr("127.0.0.1:59598")),
            None
        );
        // LISTEN.
        assert_eq!(
            find_socket_uid(TCP, addr("127.0.0.1:43561"), addr("0.0.0.0:0")),
            None
        );
    }

    #[test]
    fn unknown_connections_have_no_uid() {
        assert_eq!(
            find_socket_uid(TCP, addr("127.0.0.9:1"), addr("127.0.0.1:43561")),
            None
        );
    }

    #[test]
    fn ipv4_mapped_rows_match_ipv4_addresses() {
        let uid = find_socket_uid(TCP6, addr("127.0.0.1:48400"), addr("127.0.0.1:39603"));
        assert_eq!(uid, Some(0));
        let uid = find_socket_uid(
            TCP6,
            addr("[::ffff:127.0.0.1]:48400"),
            addr("[::ffff:127.0.0.1]:39603"),
        );
        assert_eq!(uid, Some(0));
    }

    #[test]
    fn ipv6_rows_parse() {
        let uid = find_socket_uid(TCP6, addr("[::1]:53740"), addr("[::1]:41839"));
        assert_eq!(uid, Some(0));
        assert_eq!(
            find_socket_uid(TCP6, addr("[::1]:53741"), addr("[::1]:41839")),
            None
        );
    }

    #[test]
    fn garbage_lines_are_ignored() {
        let table = "header\nnot a row\n 0: zz:zz 00:00 01 a b c 12\n";
        assert_eq!(
            find_socket_uid(table, addr("127.0.0.1:1"), addr("127.0.0.1:2")),
            None
        );
    }

    #[test]
    fn listening_addresses_are_read_from_the_table() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0200647F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000 65534        0 1 1 0000000000000000 100 0 0 10 0
   1: 0100007F:A1B2 0200647F:1F90 01 00000000:00000000 00:00000000 00000000     0        0 2 1 0000000000000000 20 4 30 10 -1
";
        let found = listening_addresses(table);
        assert_eq!(
            found,
            BTreeSet::from([IpAddr::V4(Ipv4Addr::new(127, 100, 0, 2))])
        );
        assert!(listening_on_host()
            .iter()
            .all(|a| !a.is_unspecified() || a.is_unspecified()));
    }
}
