//! How guests are networked on each host: libvirt's NAT network on Linux, vmnet on macOS.

use std::path::{Path, PathBuf};

use super::{Host, Os, homebrew_prefix, is_system_uri, macos};

/// How guests get their network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetworkMode {
    /// libvirt's NAT network with its dnsmasq (Linux).
    LibvirtNat,
    /// QEMU's own vmnet-shared netdev (macOS, where libvirt's network driver is absent).
    /// vmnet.framework needs root, so QEMU must run as root (libvirt's system daemon).
    VmnetShared,
    /// The socket_vmnet daemon (root) shares vmnet on a unix socket that an unprivileged
    /// QEMU connects to (QEMU >= 7.2 `-netdev stream`); works with `qemu:///session`.
    SocketVmnet { socket: PathBuf },
}

impl NetworkMode {
    /// Short name used in the health report and in logs.
    pub fn provider(&self) -> &'static str {
        match self {
            NetworkMode::LibvirtNat => "libvirt-nat",
            NetworkMode::VmnetShared => "vmnet-shared",
            NetworkMode::SocketVmnet { .. } => "socket_vmnet",
        }
    }

    /// Whether the guest NIC is an `<interface>` of a libvirt network (else QEMU
    /// arguments in `<qemu:commandline>` provide it).
    pub fn uses_libvirt_network(&self) -> bool {
        matches!(self, NetworkMode::LibvirtNat)
    }

    /// The QEMU arguments that give the guest its NIC, when libvirt does not.
    pub fn qemu_nic_args(&self, subnet: &GuestSubnet, mac: &str) -> Vec<String> {
        match self {
            NetworkMode::LibvirtNat => Vec::new(),
            NetworkMode::VmnetShared => macos::vmnet_args(subnet, mac),
            NetworkMode::SocketVmnet { socket } => macos::socket_vmnet_args(socket, mac),
        }
    }
}

/// The guests' subnet as the platform's networking needs it (vmnet-shared's range).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuestSubnet {
    pub gateway: std::net::Ipv4Addr,
    pub netmask: std::net::Ipv4Addr,
    /// The last address handed to guests.
    pub last_address: std::net::Ipv4Addr,
}

/// What a macOS host offers for vmnet networking, read once at start.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VmnetProbe {
    /// The socket the user named (`--vmnet-socket`), whether or not it exists yet.
    pub wanted: Option<PathBuf>,
    /// A socket_vmnet socket found at one of the usual paths.
    pub found: Option<PathBuf>,
    /// libvirt runs QEMU as root (system daemon), so QEMU's own vmnet can work.
    pub qemu_as_root: bool,
}

impl VmnetProbe {
    /// Where socket_vmnet puts its socket: Homebrew's prefix, then a source install's.
    pub fn socket_candidates() -> Vec<PathBuf> {
        vec![homebrew_prefix().join("var/run/socket_vmnet"), PathBuf::from("/var/run/socket_vmnet")]
    }

    /// Looks for a socket at the usual places; `wanted` is taken as given.
    pub fn read(wanted: Option<&Path>, libvirt_uri: &str) -> Self {
        use std::os::unix::fs::FileTypeExt;
        let is_socket = |p: &Path| std::fs::metadata(p).is_ok_and(|m| m.file_type().is_socket());
        Self {
            wanted: wanted.map(Path::to_path_buf),
            found: Self::socket_candidates().into_iter().find(|p| is_socket(p)),
            qemu_as_root: is_system_uri(libvirt_uri),
        }
    }
}

impl Host {
    /// How guests are networked: libvirt's NAT network on Linux. On macOS, where
    /// libvirt has no network driver: socket_vmnet at the named socket, or at one found;
    /// else QEMU's own vmnet-shared when QEMU runs as root; else socket_vmnet at its
    /// usual path, the only way an unprivileged QEMU gets vmnet (health then says the
    /// daemon is missing and how to start it; it may also just be starting).
    pub fn network_mode(&self, vmnet: &VmnetProbe) -> NetworkMode {
        if self.os == Os::Linux {
            return NetworkMode::LibvirtNat;
        }
        match (&vmnet.wanted, &vmnet.found, vmnet.qemu_as_root) {
            (Some(socket), _, _) | (None, Some(socket), _) => NetworkMode::SocketVmnet { socket: socket.clone() },
            (None, None, true) => NetworkMode::VmnetShared,
            (None, None, false) => NetworkMode::SocketVmnet { socket: VmnetProbe::socket_candidates().remove(0) },
        }
    }
}
