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
use std::path::Path;

/// The length of a warm spare's seed placeholder: more than any seed (a seed with 16 KiB
/// of user data is under 400 KiB), sparse on disk.
const SPARE_SEED_BYTES: u64 = 4 << 20;

/// Writes the seed `fresh` into the placeholder `cidata` in place: QEMU holds the file
/// open, with its length read at start, and the paused guest has read none of it. The
/// rest of the placeholder stays zeros, past the end of the ISO's volume. False (nothing
/// written) when the seed is longer than the placeholder.
fn fill_placeholder(fresh: &Path, cidata: &Path) -> std::io::Result<bool> {
    use std::io::Write;
    let seed = std::fs::read(fresh)?;
    let mut file = std::fs::OpenOptions::new().write(true).open(cidata)?;
    if seed.len() as u64 > file.metadata()?.len() {
        return Ok(false);
    }
    file.write_all(&seed)?;
    file.sync_data()?;
    std::fs::remove_file(fresh)?;
    Ok(true)
}

/// How a provisioned domain is started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Boot {
    /// Booted now, with its seed.
    Now,
    /// A warm spare: QEMU up and paused before the firmware runs, its seed a placeholder.
    Paused,
}

/// How long a reservation, or its removal, waits for launches in flight before it goes
/// ahead.
pub(crate) const RESERVATION_PATIENCE: std::time::Duration = std::time::Duration::from_secs(10);

impl Inner {
    /// Builds the disk, seed and domain, reserves the address, defines and starts.
    /// Returns whether the reservation is still to be made (`reserve_late`).
    pub(crate) async fn provision(
        &self,
        row: &InstanceRow,
        image: &Image,
        steps: &LaunchSteps,
        boot: Boot,
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
            async {
                match boot {
                    Boot::Now => steps.time(&row.id, "seed_iso", self.make_seed(row, &id)).await,
                    // A spare's seed is written when a launch takes it, into this file.
                    Boot::Paused => self.make_seed_placeholder(&id).await,
                }
            },
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
        match boot {
            Boot::Now => steps.time(&row.id, "start", self.deps.virsh.start(&row.id)).await?,
            Boot::Paused => steps.time(&row.id, "start", self.deps.virsh.start_paused(&row.id)).await?,
        }
        drop(starting);
        Ok(reserve_later)
    }

    /// A launch that took a warm spare (`spares`): its domain is up, paused before the
    /// firmware ran, with a seed file of zeros the guest has not read. The seed is
    /// written into that file, and the guest boots.
    pub(crate) async fn hand_over_spare(&self, row: &InstanceRow, steps: &LaunchSteps) -> Result<(), AppError> {
        let id = Self::instance_id(row)?;
        let fresh = self.deps.paths.instance_cidata_next(&id);
        steps.time(&row.id, "seed_iso", self.make_seed_at(row, &id, &fresh)).await?;
        let cidata = self.deps.paths.instance_cidata(&id);
        let filled = blocking({
            let (fresh, cidata) = (fresh.clone(), cidata.clone());
            move || fill_placeholder(&fresh, &cidata)
        });
        if !steps.time(&row.id, "write_seed", filled).await? {
            // Bigger than the placeholder (never with today's tools): QEMU opens the file anew.
            blocking({
                let (fresh, cidata) = (fresh.clone(), cidata.clone());
                move || std::fs::rename(fresh, cidata)
            })
            .await?;
            let target = self.deps.platform.cdrom_target;
            steps.time(&row.id, "insert_seed", self.deps.virsh.update_media(&row.id, target, &cidata)).await?;
        }
        steps.time(&row.id, "domain_xml", self.write_domain_xml(row, &id)).await?;
        crate::failpoint::pause("launch.before-resume").await;
        steps.time(&row.id, "resume", self.deps.virsh.resume(&row.id)).await?;
        Ok(())
    }

    /// A warm spare's seed file: zeros, sparse, as long as any seed (`SPARE_SEED_BYTES`).
    async fn make_seed_placeholder(&self, id: &InstanceId) -> Result<(), AppError> {
        let cidata = self.deps.paths.instance_cidata(id);
        blocking(move || std::fs::File::create(cidata)?.set_len(SPARE_SEED_BYTES)).await
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
        self.make_seed_at(row, id, &self.deps.paths.instance_cidata(id)).await
    }

    async fn make_seed_at(&self, row: &InstanceRow, id: &InstanceId, output: &Path) -> Result<(), AppError> {
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
        iso::build_cidata(tool, &seed_dir, output, self.config.tool_timeout).await?;
        blocking(move || std::fs::remove_dir_all(&seed_dir)).await?;
        Ok(())
    }

    /// The address picked when the launch was recorded, pinned in the DHCP server.
    pub(crate) async fn reserve_address(&self, row: &InstanceRow) -> Result<(), AppError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    // Issue 17: a spare's seed goes into the file QEMU holds open, in place: same file,
    // same length, the seed at its start and zeros after it.
    #[test]
    fn a_seed_fills_the_placeholder_in_place_and_a_longer_one_is_left_to_the_caller() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let (fresh, cidata) = (dir.path().join("new.iso"), dir.path().join("cloud-init.iso"));
        std::fs::File::create(&cidata).unwrap().set_len(8192).unwrap();
        let inode = std::fs::metadata(&cidata).unwrap().ino();
        std::fs::write(&fresh, b"CD001 cidata").unwrap();
        assert!(fill_placeholder(&fresh, &cidata).unwrap());
        let written = std::fs::read(&cidata).unwrap();
        assert_eq!((written.len(), &written[..12]), (8192, &b"CD001 cidata"[..]));
        assert!(written[12..].iter().all(|b| *b == 0));
        assert_eq!(std::fs::metadata(&cidata).unwrap().ino(), inode, "the file QEMU holds");
        assert!(!fresh.exists());

        std::fs::write(&fresh, vec![1u8; 8193]).unwrap();
        assert!(!fill_placeholder(&fresh, &cidata).unwrap(), "longer than the placeholder");
        assert_eq!(std::fs::read(&cidata).unwrap(), written, "untouched");
    }
}
