//! Building a recorded launch: the disk, the cloud-init seed and the DHCP reservation
//! (at once: none needs another), then the domain is defined and started. Where the
//! DHCP server answers reserved hosts only, the reservation waits until the instance
//! runs (`reserve_late`): it holds libvirt's network lock through a firewall reload,
//! which every start on the network waits for. A failure is the caller's to undo
//! (`fail_launch`), which finds whatever the steps made.

use super::LaunchSteps;
use crate::db::instances::InstanceRow;
use crate::error::AppError;
use crate::exec::iso;
use crate::ids::InstanceId;
use crate::images::Image;
use crate::instances::{Inner, blocking};
use crate::render::{self, DomainSpec, cloud_init};

/// How long a reservation, or its removal, waits for launches in flight before it goes
/// ahead.
pub(crate) const RESERVATION_PATIENCE: std::time::Duration = std::time::Duration::from_secs(10);

impl Inner {
    /// Builds the disk, seed and domain, reserves the address, defines and starts.
    /// Returns whether the reservation is still to be made (`reserve_late`).
    pub(super) async fn provision(
        &self,
        row: &InstanceRow,
        image: &Image,
        steps: &LaunchSteps,
    ) -> Result<bool, AppError> {
        let reserve_later = self.deps.network.reserves_after_start();
        // From the first step: a launch a little behind the others must not find its
        // start queued behind a reservation that went ahead in between.
        let starting = self.starts.starting();
        let id = Self::instance_id(row)?;
        let paths = self.deps.paths.clone();
        blocking(move || paths.ensure_instance_dir(&id)).await?;
        crate::failpoint::pause("launch.before-overlay").await;
        // All three run to their end even when one fails (join, not try_join): a step
        // dropped half-way leaves its child process running, and what that child makes
        // after the cleanup has run (a file, a reservation) would be left behind.
        let (disk, seed, address) = tokio::join!(
            steps.time(&row.id, "overlay", self.make_disk(row, image, &id)),
            steps.time(&row.id, "seed_iso", self.make_seed(row, &id)),
            async {
                if reserve_later {
                    return Ok(());
                }
                steps.time(&row.id, "reservation", self.reserve_address(row)).await
            },
        );
        disk.and(seed).and(address)?;
        let xml_file = steps.time(&row.id, "domain_xml", self.write_domain_xml(row, &id)).await?;
        crate::failpoint::pause("launch.before-define").await;
        steps.time(&row.id, "define", self.deps.virsh.define(&xml_file)).await?;
        crate::failpoint::pause("launch.before-start").await;
        steps.time(&row.id, "start", self.deps.virsh.start(&row.id)).await?;
        drop(starting);
        Ok(reserve_later)
    }

    /// The reservation of an instance that already runs; its guest's DHCP requests go
    /// unanswered until it is made. Tried a few times; after that the recovery pass,
    /// which restores any missing reservation, keeps trying.
    pub(super) async fn reserve_late(&self, row: &InstanceRow, steps: &LaunchSteps) {
        for attempt in 1..=3 {
            let reservation = steps.time(&row.id, "reservation", self.reserve_address(row));
            match self.starts.after_starts(RESERVATION_PATIENCE, reservation).await {
                Ok(()) => return,
                Err(e) if attempt < 3 => {
                    tracing::warn!(instance = %row.id, attempt, error = %e, "could not reserve the address yet");
                    tokio::time::sleep(std::time::Duration::from_secs(attempt)).await;
                }
                Err(e) => {
                    tracing::error!(instance = %row.id, error = %e, "could not reserve the address; the recovery pass retries");
                    self.want_recovery();
                }
            }
        }
    }

    /// The copy-on-write overlay on the image, grown to the instance type's disk.
    async fn make_disk(&self, row: &InstanceRow, image: &Image, id: &InstanceId) -> Result<(), AppError> {
        let base = std::path::Path::new(&image.row.file_path);
        let size = (row.disk_gib as u64) << 30;
        self.deps.qemu_img.create_overlay(base, &image.row.format, &self.deps.paths.instance_disk(id), size).await?;
        Ok(())
    }

    /// The NoCloud seed ISO; the files it is packed from are removed once it is made.
    async fn make_seed(&self, row: &InstanceRow, id: &InstanceId) -> Result<(), AppError> {
        let seed_dir = self.deps.paths.instance_seed_dir(id);
        let seed = cloud_init::SeedSpec {
            instance_id: row.id.clone(),
            hostname: row.id.clone(),
            ssh_public_keys: row.public_key.iter().cloned().collect(),
            user_data: row.user_data.clone(),
        };
        let files = cloud_init::seed_files(&seed);
        let target = seed_dir.clone();
        blocking(move || {
            std::fs::create_dir_all(&target)?;
            for (file, content) in files {
                std::fs::write(target.join(file), content)?;
            }
            Ok(())
        })
        .await?;
        let tool = self.deps.iso_tool.expect("checked at launch");
        iso::build_cidata(tool, &seed_dir, &self.deps.paths.instance_cidata(id), self.config.tool_timeout).await?;
        blocking(move || std::fs::remove_dir_all(&seed_dir)).await?;
        Ok(())
    }

    /// The address picked when the launch was recorded, pinned in the DHCP server.
    async fn reserve_address(&self, row: &InstanceRow) -> Result<(), AppError> {
        match Self::dhcp_host(row) {
            Some(host) => self.deps.network.reserve(&host).await,
            None => Ok(()),
        }
    }

    /// Renders the domain and writes it beside the instance's files (replayable by hand).
    async fn write_domain_xml(&self, row: &InstanceRow, id: &InstanceId) -> Result<std::path::PathBuf, AppError> {
        let network = self.deps.network.config();
        let spec = DomainSpec {
            name: row.id.clone(),
            title: if row.name.is_empty() { row.id.clone() } else { row.name.clone() },
            instance_type: row.instance_type.clone(),
            vcpus: row.vcpus,
            memory_mib: row.memory_mib as u64,
            mac_address: row.mac_address.clone(),
            network: network.name.clone(),
            disk_path: self.deps.paths.instance_disk(id).display().to_string(),
            cidata_path: self.deps.paths.instance_cidata(id).display().to_string(),
            console_log_path: self.deps.paths.instance_console_log(id).display().to_string(),
            nvram_path: self.deps.paths.instance_nvram(id).display().to_string(),
            qemu_args: self.deps.platform.network.qemu_nic_args(&network.guest_subnet(), &row.mac_address),
        };
        let xml = render::domain_xml(&spec, &self.deps.platform)?;
        let xml_file = self.deps.paths.instance_domain_xml(id);
        let target = xml_file.clone();
        blocking(move || std::fs::write(&target, xml)).await?;
        Ok(xml_file)
    }
}
