//! Building a recorded launch: the disk, the cloud-init seed and the DHCP reservation
//! (at once: none needs another), then the domain is defined and started. A failure is
//! the caller's to undo (`fail_launch`), which finds whatever the steps made.

use super::LaunchSteps;
use crate::db::instances::InstanceRow;
use crate::error::AppError;
use crate::exec::iso;
use crate::ids::InstanceId;
use crate::images::Image;
use crate::instances::{Inner, blocking};
use crate::render::{self, DomainSpec, cloud_init};

impl Inner {
    /// Builds the disk, seed and domain, reserves the address, defines and starts.
    pub(super) async fn provision(
        &self,
        row: &InstanceRow,
        image: &Image,
        steps: &LaunchSteps,
    ) -> Result<(), AppError> {
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
            steps.time(&row.id, "reservation", self.reserve_address(row)),
        );
        disk.and(seed).and(address)?;
        let xml_file = steps.time(&row.id, "domain_xml", self.write_domain_xml(row, &id)).await?;
        crate::failpoint::pause("launch.before-define").await;
        steps.time(&row.id, "define", self.deps.virsh.define(&xml_file)).await?;
        crate::failpoint::pause("launch.before-start").await;
        steps.time(&row.id, "start", self.deps.virsh.start(&row.id)).await?;
        Ok(())
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
