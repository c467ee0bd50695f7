//! Where a forward's connections go: asked at each connection, so a guest that stops,
//! starts again or changes its address is followed without touching the listener.

use std::net::IpAddr;

use futures_util::future::BoxFuture;

use crate::db::Db;
use crate::error::AppError;
use crate::instances::state::State;

/// What an instance can take now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Running with an address: connections are relayed there.
    Reachable(IpAddr),
    /// It exists but takes no connections now; why, for the forward's `state_reason`.
    Paused(String),
    /// Unknown or terminated: its forwards are on their way out.
    Gone,
}

/// Says where an instance is. The service's own reads the database the instance
/// monitor keeps current; tests give a fake.
pub trait Targets: Send + Sync + 'static {
    fn locate<'a>(&'a self, instance_id: &'a str) -> BoxFuture<'a, Result<Target, AppError>>;
}

/// The instances as the database has them.
pub struct InstanceTargets {
    pub db: Db,
}

impl Targets for InstanceTargets {
    fn locate<'a>(&'a self, instance_id: &'a str) -> BoxFuture<'a, Result<Target, AppError>> {
        Box::pin(async move {
            let key = instance_id.to_string();
            let row = self.db.call(move |c| crate::db::instances::get(c, &key)).await?;
            Ok(match row {
                None => Target::Gone,
                Some(row) => {
                    let state = crate::instances::status_of(&row).state;
                    target_of(instance_id, state, row.ip_address.as_deref())
                }
            })
        })
    }
}

/// Where an instance in `state` with `ip` takes connections.
pub fn target_of(instance_id: &str, state: State, ip: Option<&str>) -> Target {
    match (state, ip.and_then(|ip| ip.parse().ok())) {
        (State::Terminated, _) => Target::Gone,
        (State::Running, Some(ip)) => Target::Reachable(ip),
        (State::Running, None) => Target::Paused(format!("instance {instance_id} has no address yet")),
        (state, _) => Target::Paused(format!("instance {instance_id} is {state}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_running_instance_with_an_address_takes_connections() {
        let id = "i-0000000a";
        assert_eq!(
            target_of(id, State::Running, Some("192.168.100.12")),
            Target::Reachable([192, 168, 100, 12].into())
        );
        assert_eq!(target_of(id, State::Running, None), Target::Paused(format!("instance {id} has no address yet")));
        assert_eq!(target_of(id, State::Stopped, None), Target::Paused(format!("instance {id} is stopped")));
        assert_eq!(target_of(id, State::Pending, None), Target::Paused(format!("instance {id} is pending")));
        assert_eq!(target_of(id, State::Terminated, None), Target::Gone);
    }
}
