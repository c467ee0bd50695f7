//! The libvirt storage pool `.ec2-as-service` on `~/.ec2-as-service/storage`
//! (REQ-STOR-001): created if missing, started, autostarted.

use crate::error::AppError;
use crate::exec::virsh::Virsh;
use crate::paths::Paths;
use crate::render::{self, PoolSpec};

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PoolStatus {
    pub name: String,
    pub defined: bool,
    pub active: bool,
    pub autostart: bool,
    pub path: Option<String>,
    pub conflict: Option<String>,
}

impl PoolStatus {
    /// The commands that free the name for ec2local, which then defines its own pool.
    pub fn fix_conflict(&self) -> String {
        format!(
            "virsh pool-destroy {0}; virsh pool-undefine {0}   (ec2local recreates it), or serve with --pool-name",
            self.name
        )
    }
}

#[derive(Clone)]
pub struct StoragePool {
    virsh: Virsh,
    name: String,
    paths: Paths,
}

impl StoragePool {
    pub fn new(virsh: Virsh, name: String, paths: Paths) -> Self {
        Self { virsh, name, paths }
    }

    fn target(&self) -> String {
        self.paths.storage().to_string_lossy().into_owned()
    }

    pub async fn ensure(&self) -> Result<PoolStatus, AppError> {
        self.take_back_stale().await?;
        if self.virsh.pool_info(&self.name).await?.is_none() {
            let xml = render::pool_xml(&PoolSpec { name: self.name.clone(), path: self.target() })?;
            let file = self.paths.pool_xml();
            std::fs::write(&file, xml)?;
            self.virsh.pool_define(&file).await?;
            tracing::info!(pool = %self.name, file = %file.display(), "defined storage pool");
        }
        let status = self.status().await?;
        if let Some(conflict) = &status.conflict {
            tracing::warn!(pool = %self.name, %conflict, "existing storage pool differs from ec2local's; left as it is");
            return Ok(status);
        }
        if !status.active {
            self.virsh.pool_start(&self.name).await?;
        }
        if !status.autostart {
            self.virsh.pool_autostart(&self.name).await?;
        }
        // The file on disk is always libvirt's current definition, to replay by hand.
        let xml = self.virsh.pool_dumpxml_inactive(&self.name).await?;
        let header = "<!-- ec2local storage pool, as defined in libvirt; replay with: virsh pool-define pool.xml -->\n";
        std::fs::write(self.paths.pool_xml(), format!("{header}{xml}"))?;
        self.status().await
    }

    /// A pool of our name whose target directory no longer exists was left by an
    /// earlier data dir: nothing can be in it, so the name is taken back (undefined, to
    /// be defined again on ours). A pool whose target exists is never touched.
    async fn take_back_stale(&self) -> Result<(), AppError> {
        if self.virsh.pool_info(&self.name).await?.is_none() {
            return Ok(());
        }
        let Some(target) = pool_target_path(&self.virsh.pool_dumpxml_inactive(&self.name).await?) else {
            return Ok(());
        };
        let target_exists = tokio::fs::try_exists(&target).await.unwrap_or(true);
        if target == self.target() || target_exists {
            return Ok(());
        }
        if let Err(e) = self.virsh.pool_destroy(&self.name).await {
            tracing::debug!(pool = %self.name, error = %e, "stale pool was not running");
        }
        self.virsh.pool_undefine(&self.name).await?;
        tracing::warn!(
            pool = %self.name,
            old_target = %target,
            new_target = %self.target(),
            "took back the storage pool name: its target no longer exists (left by an earlier data dir)"
        );
        Ok(())
    }

    pub async fn status(&self) -> Result<PoolStatus, AppError> {
        let Some(info) = self.virsh.pool_info(&self.name).await? else {
            return Ok(PoolStatus { name: self.name.clone(), ..Default::default() });
        };
        let path = pool_target_path(&self.virsh.pool_dumpxml_inactive(&self.name).await?);
        let wanted = self.target();
        let conflict = match &path {
            Some(p) if *p == wanted => None,
            Some(p) => Some(format!("its target is {p}, not {wanted}")),
            None => Some("it has no target path".to_string()),
        };
        Ok(PoolStatus {
            name: self.name.clone(),
            defined: true,
            active: info.is_active(),
            autostart: info.is_autostart(),
            path,
            conflict,
        })
    }
}

/// `<pool><target><path>` of a pool's XML.
pub fn pool_target_path(xml: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Pool {
        target: Option<Target>,
    }
    #[derive(serde::Deserialize)]
    struct Target {
        path: Option<String>,
    }
    let pool: Pool = quick_xml::de::from_str(xml).ok()?;
    pool.target?.path.map(|p| p.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    // REQ-STOR-001
    #[test]
    fn reads_the_target_of_rendered_and_dumped_pools() {
        let rendered = render::pool_xml(&PoolSpec {
            name: ".ec2-as-service".into(),
            path: "/home/u/.ec2-as-service/storage".into(),
        })
        .unwrap();
        assert_eq!(pool_target_path(&rendered).as_deref(), Some("/home/u/.ec2-as-service/storage"));
        let dumped = "<pool type='dir'>\n  <name>.ec2-as-service</name>\n  <uuid>x</uuid>\n  <capacity unit='bytes'>0</capacity>\n  <source>\n  </source>\n  <target>\n    <path>/root/.ec2-as-service/storage</path>\n    <permissions>\n      <mode>0711</mode>\n    </permissions>\n  </target>\n</pool>\n";
        assert_eq!(pool_target_path(dumped).as_deref(), Some("/root/.ec2-as-service/storage"));
        assert_eq!(pool_target_path("<pool><name>x</name></pool>"), None);
    }
}
