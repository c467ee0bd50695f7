//! Every on-disk location of ec2local. Nobody else joins paths under the data dir.
//!
//! ```text
//! ~/.ec2-as-service/
//! |-- ec2local.db         SQLite metadata
//! |-- network.xml         the rendered NAT network, replayable with virsh net-define
//! |-- pool.xml            the rendered storage pool, replayable with virsh pool-define
//! |-- storage/            libvirt storage pool
//! |-- images/             base OS images
//! |-- instances/i-xxxxxxxx/{disk.qcow2, cloud-init.iso, domain.xml, console.log}
//! |-- keys/              private keys of key pairs (0700, files 0600)
//! `-- logs/app.log
//! ```

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::ids::InstanceId;

/// Name of the data directory under the user's home (REQ-STOR-005).
pub const DATA_DIR_NAME: &str = ".ec2-as-service";

const IMPORT_STAGING_SUFFIX: &str = ".upload";
const IMPORT_PARTIAL_SUFFIX: &str = ".importing";

#[derive(Debug, Clone)]
pub struct Paths {
    root: PathBuf,
}

impl Paths {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// `~/.ec2-as-service`, or None when no home directory is known.
    pub fn default_root() -> Option<PathBuf> {
        std::env::var_os("HOME").filter(|h| !h.is_empty()).map(|home| PathBuf::from(home).join(DATA_DIR_NAME))
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn storage(&self) -> PathBuf {
        self.root.join("storage")
    }
    pub fn images(&self) -> PathBuf {
        self.root.join("images")
    }
    pub fn instances(&self) -> PathBuf {
        self.root.join("instances")
    }
    /// The file of a catalog image, by its upstream file name.
    pub fn catalog_image(&self, file_name: &str) -> PathBuf {
        self.images().join(file_name)
    }
    /// A catalog image's download in progress, kept between attempts to resume from.
    pub fn pull_partial(&self, file_name: &str) -> PathBuf {
        self.images().join(format!(".{file_name}.partial"))
    }
    /// The file of an imported image (the name is validated as file-name safe).
    pub fn imported_image(&self, name: &str) -> PathBuf {
        self.images().join(format!("{name}.qcow2"))
    }
    /// Where the bytes of one import land before they are inspected: its own file, so
    /// concurrent imports never share one, and nobody else can swap it.
    pub fn import_staging(&self, name: &str, token: &str) -> PathBuf {
        self.images().join(format!(".{name}.{token}{IMPORT_STAGING_SUFFIX}"))
    }
    /// The qcow2 an import converts into, renamed into place when complete.
    pub fn import_partial(&self, name: &str, token: &str) -> PathBuf {
        self.images().join(format!(".{name}.{token}{IMPORT_PARTIAL_SUFFIX}"))
    }
    /// Files in images/ that only an import in progress owns: a crash leaves them behind.
    pub fn is_import_leftover(file_name: &str) -> bool {
        file_name.starts_with('.')
            && (file_name.ends_with(IMPORT_STAGING_SUFFIX) || file_name.ends_with(IMPORT_PARTIAL_SUFFIX))
    }
    pub fn logs(&self) -> PathBuf {
        self.root.join("logs")
    }
    pub fn log_file(&self) -> PathBuf {
        self.logs().join("app.log")
    }
    pub fn database(&self) -> PathBuf {
        self.root.join("ec2local.db")
    }
    /// Private keys of key pairs (0700; each file 0600).
    pub fn keys(&self) -> PathBuf {
        self.root.join("keys")
    }
    /// The private key file of a key pair. Key pair names may hold any printable
    /// character, so the file is named by a hash of the name.
    pub fn private_key(&self, key_name: &str) -> PathBuf {
        use sha2::Digest;
        self.keys().join(format!("{}.pem", hex::encode(sha2::Sha256::digest(key_name.as_bytes()))))
    }
    pub fn network_xml(&self) -> PathBuf {
        self.root.join("network.xml")
    }
    pub fn pool_xml(&self) -> PathBuf {
        self.root.join("pool.xml")
    }
    pub fn instance_dir(&self, id: &InstanceId) -> PathBuf {
        // InstanceId is validated on construction, so it can never escape instances/.
        self.instances().join(id.to_string())
    }
    pub fn instance_disk(&self, id: &InstanceId) -> PathBuf {
        self.instance_dir(id).join("disk.qcow2")
    }
    pub fn instance_cidata(&self, id: &InstanceId) -> PathBuf {
        self.instance_dir(id).join("cloud-init.iso")
    }
    /// A warm spare's seed as it is made, before it is written into `instance_cidata`.
    pub fn instance_cidata_next(&self, id: &InstanceId) -> PathBuf {
        self.instance_dir(id).join("cloud-init.new.iso")
    }
    pub fn instance_domain_xml(&self, id: &InstanceId) -> PathBuf {
        self.instance_dir(id).join("domain.xml")
    }
    pub fn instance_console_log(&self, id: &InstanceId) -> PathBuf {
        self.instance_dir(id).join("console.log")
    }
    /// The UEFI variables of an aarch64 guest (libvirt copies the template there).
    pub fn instance_nvram(&self, id: &InstanceId) -> PathBuf {
        self.instance_dir(id).join("nvram.fd")
    }
    /// The cloud-init files while the seed ISO is built from them.
    pub fn instance_seed_dir(&self, id: &InstanceId) -> PathBuf {
        self.instance_dir(id).join("seed")
    }

    /// Creates the layout. Directories QEMU must reach (the root, storage, images,
    /// instances) are 0711 so the hypervisor's user can traverse but not list them;
    /// the logs directory is 0700.
    pub fn ensure(&self) -> io::Result<()> {
        for (dir, mode) in [
            (self.root.clone(), 0o711),
            (self.storage(), 0o711),
            (self.images(), 0o711),
            (self.instances(), 0o711),
            (self.logs(), 0o700),
            (self.keys(), 0o700),
        ] {
            fs::create_dir_all(&dir)?;
            fs::set_permissions(&dir, fs::Permissions::from_mode(mode))?;
        }
        Ok(())
    }

    /// Creates an instance's own directory (0711, see `ensure`).
    pub fn ensure_instance_dir(&self, id: &InstanceId) -> io::Result<PathBuf> {
        let dir = self.instance_dir(id);
        fs::create_dir_all(&dir)?;
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o711))?;
        Ok(dir)
    }
}

/// The command-line client's own files, apart from the service's data dir (the two
/// may belong to different users):
///
/// ```text
/// ~/.config/ec2local/         (or $EC2LOCAL_CLI_HOME)
/// |-- keys/NAME              private keys of pairs created with `ec2local keys create` (0600)
/// |-- known_hosts            instances' host keys, by instance id, as the service recorded them
/// `-- ssh_config             `Host` entries, included from ~/.ssh/config by `ssh-config --install`
/// ```
#[derive(Debug, Clone)]
pub struct CliPaths {
    root: PathBuf,
    home: PathBuf,
}

impl CliPaths {
    /// From `$EC2LOCAL_CLI_HOME` or `$HOME`; None when neither is set.
    pub fn from_env() -> Option<Self> {
        let home = std::env::var_os("HOME").filter(|h| !h.is_empty()).map(PathBuf::from)?;
        let root = std::env::var_os("EC2LOCAL_CLI_HOME")
            .filter(|h| !h.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| home.join(".config").join("ec2local"));
        Some(Self::new(std::path::absolute(&root).unwrap_or(root), &home))
    }

    pub fn new(root: impl Into<PathBuf>, home: &Path) -> Self {
        Self { root: root.into(), home: home.to_path_buf() }
    }

    pub fn keys(&self) -> PathBuf {
        self.root.join("keys")
    }

    /// A key pair's private key file; names with other characters than `A-Za-z0-9._-`
    /// are escaped (`%2F`) so that no name leaves `keys/`.
    pub fn private_key(&self, key_name: &str) -> PathBuf {
        let mut file = String::new();
        for (i, byte) in key_name.bytes().enumerate() {
            let plain = byte.is_ascii_alphanumeric() || b"_-".contains(&byte) || (byte == b'.' && i > 0);
            if plain {
                file.push(byte as char);
            } else {
                file.push_str(&format!("%{byte:02X}"));
            }
        }
        self.keys().join(file)
    }

    pub fn known_hosts(&self) -> PathBuf {
        self.root.join("known_hosts")
    }

    pub fn ssh_config(&self) -> PathBuf {
        self.root.join("ssh_config")
    }

    /// The user's own `~/.ssh/config`.
    pub fn user_ssh_config(&self) -> PathBuf {
        self.home.join(".ssh").join("config")
    }

    /// The user's own public keys, in the order `keys import` tries them.
    pub fn user_public_keys(&self) -> Vec<PathBuf> {
        ["id_ed25519.pub", "id_ecdsa.pub", "id_rsa.pub"].iter().map(|f| self.home.join(".ssh").join(f)).collect()
    }

    /// Creates the directory and `keys/`, private to the user.
    pub fn ensure(&self) -> io::Result<()> {
        for dir in [self.root.clone(), self.keys()] {
            fs::create_dir_all(&dir)?;
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // REQ-STOR-005
    #[test]
    fn layout_matches_the_required_structure() {
        let tmp = tempfile::tempdir().unwrap();
        let paths = Paths::new(tmp.path().join(DATA_DIR_NAME));
        paths.ensure().unwrap();
        for sub in ["storage", "images", "instances", "logs"] {
            assert!(paths.root().join(sub).is_dir(), "{sub} missing");
        }
        let id: InstanceId = "i-0123abcd".parse().unwrap();
        assert!(paths.instance_disk(&id).ends_with(".ec2-as-service/instances/i-0123abcd/disk.qcow2"));
        assert!(paths.instance_cidata(&id).ends_with("instances/i-0123abcd/cloud-init.iso"));
        assert!(paths.log_file().ends_with(".ec2-as-service/logs/app.log"));
        let mode = |p: PathBuf| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(paths.logs()), 0o700);
        assert_eq!(mode(paths.instances()), 0o711);
    }

    #[test]
    fn ensure_again_keeps_what_is_there_and_restores_the_modes() {
        let tmp = tempfile::tempdir().unwrap();
        let paths = Paths::new(tmp.path().join("data"));
        paths.ensure().unwrap();
        let image = paths.imported_image("kept");
        fs::write(&image, "an image").unwrap();
        fs::set_permissions(paths.keys(), fs::Permissions::from_mode(0o755)).unwrap();
        paths.ensure().unwrap();
        assert_eq!(fs::read_to_string(&image).unwrap(), "an image");
        assert_eq!(fs::metadata(paths.keys()).unwrap().permissions().mode() & 0o777, 0o700);
    }

    #[test]
    fn import_files_are_named_per_import_and_known_as_leftovers() {
        let paths = Paths::new("/d");
        let (a, b) = (paths.import_staging("deb", "0001"), paths.import_staging("deb", "0002"));
        assert_ne!(a, b);
        for path in [a, b, paths.import_partial("deb", "0001")] {
            assert!(path.starts_with("/d/images"), "{path:?}");
            assert!(Paths::is_import_leftover(&path.file_name().unwrap().to_string_lossy()), "{path:?}");
        }
        for kept in [paths.imported_image("deb"), paths.pull_partial("jammy.img"), paths.catalog_image("jammy.img")] {
            assert!(!Paths::is_import_leftover(&kept.file_name().unwrap().to_string_lossy()), "{kept:?}");
        }
    }

    #[test]
    fn cli_key_files_stay_in_keys() {
        let cli = CliPaths::new("/home/u/.config/ec2local", Path::new("/home/u"));
        assert_eq!(cli.private_key("laptop-2.key"), Path::new("/home/u/.config/ec2local/keys/laptop-2.key"));
        assert_eq!(cli.private_key("../x"), Path::new("/home/u/.config/ec2local/keys/%2E.%2Fx"));
        assert_eq!(cli.private_key("a b/c"), Path::new("/home/u/.config/ec2local/keys/a%20b%2Fc"));
        assert_eq!(cli.user_ssh_config(), Path::new("/home/u/.ssh/config"));
    }
}
