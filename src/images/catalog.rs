//! The built-in catalog: Ubuntu 22.04 and 20.04 server cloud images for the host's
//! architecture (REQ-IMG-001/002).

use sha2::Digest;

use crate::platform::Arch;

/// Where Ubuntu publishes its cloud images; overridable for mirrors and tests.
pub const DEFAULT_BASE_URL: &str = "https://cloud-images.ubuntu.com";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogEntry {
    pub id: String,
    pub name: String,
    pub description: String,
    pub os: String,
    pub os_version: String,
    pub architecture: String,
    /// File name under images/ and in the published SHA256SUMS.
    pub file_name: String,
    pub url: String,
    pub sha256sums_url: String,
    pub default_user: String,
}

/// EC2-looking image IDs, stable for a name and architecture: `ami-` + 8 hex.
pub fn image_id(name: &str, architecture: &str) -> String {
    let digest = sha2::Sha256::digest(format!("{name}/{architecture}").as_bytes());
    format!("ami-{}", hex::encode(&digest[..4]))
}

pub fn catalog(arch: Arch, base_url: &str) -> Vec<CatalogEntry> {
    let base = base_url.trim_end_matches('/');
    let ubuntu_arch = arch.debian_name();
    [("22.04", "jammy", "Jammy Jellyfish"), ("20.04", "focal", "Focal Fossa")]
        .into_iter()
        .map(|(version, codename, title)| {
            let name = format!("ubuntu-{version}");
            let file_name = format!("{codename}-server-cloudimg-{ubuntu_arch}.img");
            CatalogEntry {
                id: image_id(&name, arch.libvirt_name()),
                description: format!("Ubuntu Server {version} LTS ({title}) cloud image, {ubuntu_arch}"),
                os: "ubuntu".into(),
                os_version: version.into(),
                architecture: arch.libvirt_name().into(),
                url: format!("{base}/{codename}/current/{file_name}"),
                sha256sums_url: format!("{base}/{codename}/current/SHA256SUMS"),
                file_name,
                default_user: "ubuntu".into(),
                name,
            }
        })
        .collect()
}

/// The checksum of `file_name` in a SHA256SUMS document (`HEX *NAME` or `HEX  NAME`).
pub fn checksum_for(sha256sums: &str, file_name: &str) -> Option<String> {
    sha256sums.lines().find_map(|line| {
        let (hash, name) = line.trim().split_once(char::is_whitespace)?;
        let name = name.trim_start().trim_start_matches('*');
        (name == file_name && hash.len() == 64 && hash.chars().all(|c| c.is_ascii_hexdigit()))
            .then(|| hash.to_ascii_lowercase())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // REQ-IMG-001, REQ-IMG-002
    #[test]
    fn the_catalog_follows_the_architecture() {
        let amd = catalog(Arch::X86_64, DEFAULT_BASE_URL);
        let names: Vec<&str> = amd.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["ubuntu-22.04", "ubuntu-20.04"]);
        assert_eq!(amd[0].url, "https://cloud-images.ubuntu.com/jammy/current/jammy-server-cloudimg-amd64.img");
        assert_eq!(amd[0].sha256sums_url, "https://cloud-images.ubuntu.com/jammy/current/SHA256SUMS");
        assert_eq!(amd[1].file_name, "focal-server-cloudimg-amd64.img");
        assert!(amd.iter().all(|e| e.architecture == "x86_64" && e.default_user == "ubuntu"));
        let arm = catalog(Arch::Aarch64, "http://127.0.0.1:9/mirror/");
        assert_eq!(arm[0].url, "http://127.0.0.1:9/mirror/jammy/current/jammy-server-cloudimg-arm64.img");
        assert!(arm.iter().all(|e| e.architecture == "aarch64"));
        assert_ne!(arm[0].id, amd[0].id, "ids differ per architecture");
    }

    #[test]
    fn ids_are_ami_dash_8_hex_and_stable() {
        let id = image_id("ubuntu-22.04", "x86_64");
        assert_eq!(id, image_id("ubuntu-22.04", "x86_64"));
        assert!(id.starts_with("ami-") && id.len() == 12 && id[4..].chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(id, image_id("ubuntu-20.04", "x86_64"));
    }

    #[test]
    fn checksums_are_found_in_both_sha256sums_styles() {
        let sums = format!(
            "{a} *jammy-server-cloudimg-amd64.img\n{b}  jammy-server-cloudimg-arm64.img\n{c} *other.img\n",
            a = "a".repeat(64),
            b = "B".repeat(64),
            c = "c".repeat(64)
        );
        assert_eq!(checksum_for(&sums, "jammy-server-cloudimg-amd64.img"), Some("a".repeat(64)));
        assert_eq!(checksum_for(&sums, "jammy-server-cloudimg-arm64.img"), Some("b".repeat(64)));
        assert_eq!(checksum_for(&sums, "missing.img"), None);
        assert_eq!(checksum_for("short *x.img", "x.img"), None);
    }
}
