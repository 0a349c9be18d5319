//! The data planes behind the ELBv2 API: each load balancer's loopback
//! address, and one `endstate_lb::LoadBalancer` per listener on
//! (that address, the listener's port), holding a copy of each target
//! group its forward action names.
//!
//! **Addresses.** A load balancer gets the first address of
//! 127.101.0.1 – 127.101.255.254 that it can *claim*: a listening socket on
//! (address, [`CLAIM_PORT`]), held for the balancer's life. Another cloud on
//! the same host (or a test running beside this one) holds its own claims,
//! so a failed bind means "taken, try the next" — there is never a check
//! before the bind. The claim port is refused as a listener port.
//!
//! **Target groups.** A group lives in the data plane of every listener
//! that forwards to it (with any weight, 0 included: ELBv2 health-checks
//! every group a listener names); a group no listener names has no data
//! plane, and its targets are `unused`. Only targets whose address is
//! loopback are given to a data plane: nothing is ever probed or forwarded
//! elsewhere.
//!
//! Not here: the records and their validation (`records`), persistence.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use endstate_clock::SharedClock;
use endstate_lb::{LbError, Target, TargetGroupId, TargetHealth};
use tokio::net::TcpListener;

use super::records::{State, TargetGroupRecord};
use super::Elbv2Error;

/// The port each load balancer's claim socket holds on its address
/// (outside Linux's default ephemeral range, 32768–60999).
pub const CLAIM_PORT: u16 = 61_101;

/// How long a restore retries a bind that another process (a cloud that
/// is still shutting down) holds.
const REBIND_PATIENCE: Duration = Duration::from_secs(3);

/// 127.101.(n >> 8).(n & 255) for n from 1 to 65,534.
fn nth_address(n: u32) -> Ipv4Addr {
    let [_, _, hi, lo] = n.to_be_bytes();
    Ipv4Addr::new(127, 101, hi, lo)
}

struct Claim {
    address: Ipv4Addr,
    /// Held, never accepted on: its bind is the claim.
    _socket: TcpListener,
}

struct Plane {
    balancer: endstate_lb::LoadBalancer,
    /// Target group ARN → its copy in this data plane.
    groups: BTreeMap<String, TargetGroupId>,
}

/// Every claim and every listener's data plane.
pub(crate) struct Planes {
    clock: SharedClock,
    claims: BTreeMap<String, Claim>,
    listeners: BTreeMap<String, Plane>,
}

impl std::fmt::Debug for Planes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Planes")
            .field("claims", &self.claims.len())
            .field("listeners", &self.listeners.len())
            .finish()
    }
}

fn internal(context: &str) -> impl FnOnce(LbError) -> Elbv2Error + '_ {
    move |e| Elbv2Error::Internal(format!("{context}: {e}"))
}

/// Whether traffic may go to this address.
pub(crate) fn forwardable(address: Option<IpAddr>) -> bool {
    address.is_some_and(|a| a.is_loopback())
}

fn lb_target(id: &str, record: &super::records::TargetRecord) -> Option<Target> {
    let address = record.address.filter(|a| a.is_loopback())?;
    Some(Target {
        id: id.to_string(),
        address,
        port: record.port,
        generation: record.generation.clone(),
    })
}

impl Planes {
    pub(crate) fn new(clock: SharedClock) -> Self {
        Self {
            clock,
            claims: BTreeMap::new(),
            listeners: BTreeMap::new(),
        }
    }

    /// Claims an address for `load_balancer_arn`: `preferred` (its address
    /// before a restart) if it can be had within a few seconds, else the
    /// first free one.
    pub(crate) async fn claim(
        &mut self,
        load_balancer_arn: &str,
        preferred: Option<Ipv4Addr>,
    ) -> Result<Ipv4Addr, Elbv2Error> {
        if let Some(address) = preferred {
            let deadline = tokio::time::Instant::now() + REBIND_PATIENCE;
            loop {
                match TcpListener::bind((address, CLAIM_PORT)).await {
                    Ok(socket) => return Ok(self.hold(load_balancer_arn, address, socket)),
                    Err(e) if tokio::time::Instant::now() >= deadline => {
                        tracing::warn!(%address, error = %e, load_balancer = load_balancer_arn,
                            "the load balancer's address is taken; it gets another");
                        break;
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        }
        let ours: BTreeSet<Ipv4Addr> = self.claims.values().map(|c| c.address).collect();
        for n in 1..=65_534u32 {
            let address = nth_address(n);
            if ours.contains(&address) {
                continue;
            }
            match TcpListener::bind((address, CLAIM_PORT)).await {
                Ok(socket) => return Ok(self.hold(load_balancer_arn, address, socket)),
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => continue,
                Err(e) => {
                    return Err(Elbv2Error::Internal(format!(
                        "claiming {address}:{CLAIM_PORT} for a load balancer: {e}"
                    )))
                }
            }
        }
        Err(Elbv2Error::TooManyLoadBalancers(
            "every address of 127.101.0.0/16 is taken".to_string(),
        ))
    }

    fn hold(&mut self, arn: &str, address: Ipv4Addr, socket: TcpListener) -> Ipv4Addr {
        self.claims.insert(
            arn.to_string(),
            Claim {
                address,
                _socket: socket,
            },
        );
        address
    }

    /// Gives the load balancer's address back.
    pub(crate) fn release(&mut self, load_balancer_arn: &str) {
        self.claims.remove(load_balancer_arn);
    }

    /// Starts the data plane of a listener and routes by its forward action.
    /// A restore retries a bind held by a cloud still shutting down.
    pub(crate) async fn start_listener(
        &mut self,
        state: &State,
        listener_arn: &str,
        address: Ipv4Addr,
        port: u16,
        forward: &[(String, u32)],
        patient: bool,
    ) -> Result<(), Elbv2Error> {
        let listen = SocketAddr::from((address, port));
        let deadline = tokio::time::Instant::now() + REBIND_PATIENCE;
        let balancer = loop {
            match endstate_lb::LoadBalancer::start(listen, self.clock.clone()).await {
                Ok(balancer) => break balancer,
                Err(LbError::Bind { source, .. })
                    if source.kind() == std::io::ErrorKind::AddrInUse =>
                {
                    if !patient || tokio::time::Instant::now() >= deadline {
                        return Err(Elbv2Error::DuplicateListener(format!(
                            "Port {port} of {address} is already in use on this host"
                        )));
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => return Err(internal("starting a listener")(e)),
            }
        };
        self.listeners.insert(
            listener_arn.to_string(),
            Plane {
                balancer,
                groups: BTreeMap::new(),
            },
        );
        self.set_forward(state, listener_arn, forward).await
    }

    /// Routes the listener by `forward`: groups it newly names are made in
    /// its data plane first, then the weights are swapped (every request
    /// starting after this returns uses them), then the groups it no longer
    /// names are removed.
    pub(crate) async fn set_forward(
        &mut self,
        state: &State,
        listener_arn: &str,
        forward: &[(String, u32)],
    ) -> Result<(), Elbv2Error> {
        let Some(plane) = self.listeners.get_mut(listener_arn) else {
            return Err(Elbv2Error::Internal(format!(
                "listener {listener_arn} has no data plane"
            )));
        };
        let mut weights = Vec::new();
        for (arn, weight) in forward {
            let id = match plane.groups.get(arn) {
                Some(id) => *id,
                None => {
                    let record = state.target_groups.get(arn).ok_or_else(|| {
                        Elbv2Error::TargetGroupNotFound(format!("Target group '{arn}' not found"))
                    })?;
                    let id = add_group(&plane.balancer, record)?;
                    plane.groups.insert(arn.clone(), id);
                    id
                }
            };
            weights.push((id, *weight));
        }
        plane
            .balancer
            .set_forward(weights)
            .map_err(internal("switching the forward action"))?;
        let gone: Vec<(String, TargetGroupId)> = plane
            .groups
            .iter()
            .filter(|(arn, _)| !forward.iter().any(|(f, _)| f == *arn))
            .map(|(arn, id)| (arn.clone(), *id))
            .collect();
        for (arn, id) in gone {
            plane.groups.remove(&arn);
            plane
                .balancer
                .remove_target_group(id)
                .await
                .map_err(internal("removing a target group"))?;
        }
        Ok(())
    }

    /// Stops a listener's data plane (open connections finish their request).
    pub(crate) async fn stop_listener(&mut self, listener_arn: &str) {
        if let Some(plane) = self.listeners.remove(listener_arn) {
            plane.balancer.stop().await;
        }
    }

    /// The copies of a target group, in every listener's data plane.
    fn copies(&self, target_group_arn: &str) -> Vec<(&endstate_lb::LoadBalancer, TargetGroupId)> {
        self.listeners
            .values()
            .filter_map(|p| p.groups.get(target_group_arn).map(|id| (&p.balancer, *id)))
            .collect()
    }

    /// Registers targets (those with a loopback address) in every copy.
    pub(crate) fn register(
        &self,
        target_group_arn: &str,
        targets: &[(String, super::records::TargetRecord)],
    ) -> Result<(), Elbv2Error> {
        let targets: Vec<Target> = targets
            .iter()
            .filter_map(|(id, record)| lb_target(id, record))
            .collect();
        if targets.is_empty() {
            return Ok(());
        }
        for (balancer, id) in self.copies(target_group_arn) {
            balancer
                .register_targets(id, targets.clone())
                .map_err(internal("registering targets"))?;
        }
        Ok(())
    }

    /// Starts draining targets in every copy.
    pub(crate) fn deregister(
        &self,
        target_group_arn: &str,
        ids: &[String],
    ) -> Result<(), Elbv2Error> {
        for (balancer, id) in self.copies(target_group_arn) {
            balancer
                .deregister_targets(id, ids)
                .map_err(internal("deregistering targets"))?;
        }
        Ok(())
    }

    pub(crate) fn set_deregistration_delay(
        &self,
        target_group_arn: &str,
        seconds: u32,
    ) -> Result<(), Elbv2Error> {
        for (balancer, id) in self.copies(target_group_arn) {
            balancer
                .set_deregistration_delay(id, Duration::from_secs(u64::from(seconds)))
                .map_err(internal("setting the deregistration delay"))?;
        }
        Ok(())
    }

    /// The health of the group's targets as the first listener forwarding
    /// to it probes them (draining ones included), or `None` when no
    /// listener does.
    pub(crate) fn health(&self, target_group_arn: &str) -> Option<Vec<TargetHealth>> {
        let (balancer, id) = self.copies(target_group_arn).into_iter().next()?;
        balancer.probed_target_health(id).ok()
    }

    /// Responses and 5xx responses of the group over the last `window`,
    /// summed over every listener forwarding to it.
    pub(crate) fn counts(&self, target_group_arn: &str, window: Duration) -> (u64, u64) {
        let since = self.clock.now().saturating_sub(window);
        self.copies(target_group_arn)
            .into_iter()
            .filter_map(|(balancer, id)| balancer.response_counts(id, since).ok())
            .fold((0, 0), |acc, (n, e)| (acc.0 + n, acc.1 + e))
    }
}

/// Makes a target group's copy in one data plane, with its settings and
/// its targets.
fn add_group(
    balancer: &endstate_lb::LoadBalancer,
    record: &TargetGroupRecord,
) -> Result<TargetGroupId, Elbv2Error> {
    let check = record.health_check.to_check()?;
    let id = balancer
        .create_target_group(&record.name, check)
        .map_err(internal("making a target group's data plane"))?;
    balancer
        .set_deregistration_delay(
            id,
            Duration::from_secs(u64::from(record.deregistration_delay_seconds)),
        )
        .map_err(internal("setting the deregistration delay"))?;
    let targets: Vec<Target> = record
        .targets
        .iter()
        .filter_map(|(id, t)| lb_target(id, t))
        .collect();
    if !targets.is_empty() {
        balancer
            .register_targets(id, targets)
            .map_err(internal("registering targets"))?;
    }
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_count_through_127_101() {
        assert_eq!(nth_address(1), Ipv4Addr::new(127, 101, 0, 1));
        assert_eq!(nth_address(258), Ipv4Addr::new(127, 101, 1, 2));
        assert_eq!(nth_address(65_534), Ipv4Addr::new(127, 101, 255, 254));
    }

    #[tokio::test]
    async fn a_claimed_address_is_skipped_by_the_next_claim() {
        let clock: SharedClock = endstate_clock::SystemClock::shared();
        let (mut a, mut b) = (Planes::new(clock.clone()), Planes::new(clock));
        let first = a.claim("lb-a", None).await.expect("claim a");
        let second = b.claim("lb-b", None).await.expect("claim b");
        assert_ne!(first, second, "two clouds never share an address");
        a.release("lb-a");
        let again = b
            .claim("lb-c", Some(first))
            .await
            .expect("claim the freed one");
        assert_eq!(again, first);
    }
}
