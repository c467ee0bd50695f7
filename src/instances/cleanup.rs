//! Removing what an instance has outside the database: its domain, its DHCP
//! reservation and its directory. Serves terminate and the undo of a failed launch.
//! Nothing is swallowed: what could not be removed is named, so the row can say it.

use std::fmt;

use super::Inner;
use super::create::RESERVATION_PATIENCE;
use crate::db::instances::InstanceRow;
use crate::error::AppError;
use crate::exec::virsh::VirshError;

/// What a cleanup could not remove, and why.
#[derive(Debug)]
pub(crate) struct Leftovers {
    pub items: Vec<String>,
    pub cause: AppError,
    /// Whether the DHCP reservation is gone all the same (the address can be freed).
    pub reservation_released: bool,
}

impl fmt::Display for Leftovers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "left behind: {} ({})", self.items.join(", "), self.cause)
    }
}

/// virsh's answer when the domain is already off.
fn already_off(err: &VirshError) -> bool {
    match err {
        VirshError::NotFound(_) => true,
        VirshError::Failed(e) => e.stderr().is_some_and(|s| s.contains("not running")),
        _ => false,
    }
}

impl Inner {
    /// Destroys a domain; one that is already off or gone is fine.
    pub(crate) async fn destroy_domain(&self, id: &str) -> Result<(), VirshError> {
        match self.deps.virsh.destroy(id).await {
            Err(e) if !already_off(&e) => Err(e),
            _ => Ok(()),
        }
    }

    /// Removes a reservation; where reservations follow starts, after the launches on
    /// their way to their start (the removal holds libvirt's network lock as long).
    async fn release_reservation(&self, host: &crate::render::DhcpHost) -> Result<(), AppError> {
        if self.deps.network.reserves_after_start() {
            self.starts.after_starts(RESERVATION_PATIENCE, self.deps.network.release(host)).await
        } else {
            self.deps.network.release(host).await
        }
    }

    /// Removes the domain (stopped first), the directory and the DHCP reservation, each
    /// tolerating what is already gone. The files stay while the domain could not be
    /// removed: a QEMU may still have them open. The caller frees the row's address
    /// with its state change once the reservation is gone.
    pub(crate) async fn remove_resources(&self, row: &InstanceRow) -> Result<(), Leftovers> {
        let dir = self.deps.paths.instance_dir(&Self::instance_id(row).map_err(|cause| Leftovers {
            items: vec!["everything (the instance id is malformed)".into()],
            cause,
            reservation_released: false,
        })?);
        let mut items = Vec::new();
        let mut cause: Option<AppError> = None;

        let domain = async {
            self.destroy_domain(&row.id).await?;
            match self.deps.virsh.undefine(&row.id).await {
                Err(VirshError::NotFound(_)) | Ok(()) => Ok(()),
                Err(e) => Err(e),
            }
        };
        let domain_gone = match domain.await {
            Ok(()) => true,
            Err(e) => {
                items.push(format!("the libvirt domain {}", row.id));
                cause.get_or_insert(e.into());
                false
            }
        };

        // The files first: on a full disk, removing them makes room for the database.
        if domain_gone {
            let target = dir.clone();
            let removed = super::blocking(move || match std::fs::remove_dir_all(&target) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                other => other,
            })
            .await;
            if let Err(e) = removed {
                items.push(format!("the directory {}", dir.display()));
                cause.get_or_insert(e);
            }
        } else {
            items.push(format!("the directory {} (kept while the domain exists)", dir.display()));
        }

        let mut reservation_released = true;
        if let Some(host) = Self::dhcp_host(row)
            && let Err(e) = self.release_reservation(&host).await
        {
            items.push(format!("the DHCP reservation of {} for {}", host.ip, host.mac));
            cause.get_or_insert(e);
            reservation_released = false;
        }

        match cause {
            None => Ok(()),
            Some(cause) => {
                if matches!(cause, AppError::LibvirtUnavailable(_)) {
                    self.want_recovery();
                }
                Err(Leftovers { items, cause, reservation_released })
            }
        }
    }
}
