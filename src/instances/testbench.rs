//! Instances over a scripted `virsh` and a database of their own, for unit tests of the
//! orchestration: what is run, in which order, and where a row ends when a step fails.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{InstanceDeps, Instances, InstancesConfig};
use crate::config::{Limits, NetworkConfig};
use crate::db::Db;
use crate::db::instances::{self as rows, InstanceRow};
use crate::exec::qemu_img::QemuImg;
use crate::exec::scripted::Scripted;
use crate::exec::virsh::Virsh;
use crate::images::{Images, ImagesConfig};
use crate::keypairs::KeyPairs;
use crate::network::NetworkManager;
use crate::paths::Paths;
use crate::platform::{Accelerator, Host, NetworkMode};

/// The instance every test works on, with the reservation `NETWORK_XML` holds for it.
pub const ID: &str = "i-1a2b3c4d";
pub const MAC: &str = "52:54:1a:2b:3c:4d";
pub const IP: &str = "192.168.100.10";

/// `virsh net-dumpxml --inactive` of ec2local's default network with the reservation.
pub const NETWORK_XML: &str = "<network>
  <name>ec2-as-service</name>
  <forward mode='nat'/>
  <bridge name='ec2br0' stp='on' delay='0'/>
  <ip address='192.168.100.1' netmask='255.255.255.0'>
    <dhcp>
      <range start='192.168.100.10' end='192.168.100.254'/>
      <host mac='52:54:1a:2b:3c:4d' name='i-1a2b3c4d' ip='192.168.100.10'/>
    </dhcp>
  </ip>
</network>
";

/// `virsh net-info` of that network, running.
pub const NETWORK_INFO: &str = "Name:           ec2-as-service\nActive:         yes\nPersistent:     yes\nAutostart:      yes\nBridge:         ec2br0\n";

pub const LIBVIRT_DOWN: &str = "error: failed to connect to the hypervisor\nerror: Failed to connect socket";

pub struct Bench {
    pub instances: Instances,
    pub script: Arc<Scripted>,
    pub paths: Paths,
    _dir: tempfile::TempDir,
}

/// Instances whose `virsh` answers from `script`; guests get `timeout` to stop.
pub fn instances_over(script: Scripted, timeout: Duration) -> Bench {
    instances_configured(script, config(timeout))
}

/// The configuration of `instances_over`.
pub fn config(timeout: Duration) -> InstancesConfig {
    InstancesConfig {
        limits: Limits::default(),
        stop_timeout: timeout,
        terminate_grace: timeout,
        monitor_interval: Duration::from_secs(3600),
        safety_poll: Duration::from_secs(3600),
        warm_spares: 0,
        tool_timeout: Duration::from_secs(5),
        qemu_user: None,
        status_timeout: Duration::from_secs(300),
        guest_ssh_port: 22,
        health_max_age: Duration::from_secs(60),
    }
}

/// Instances whose `virsh` answers from `script`, configured as given.
pub fn instances_configured(script: Scripted, config: InstancesConfig) -> Bench {
    instances_built(script, config, |_| {})
}

/// Instances whose `virsh` answers from `script`, their deps changed by `adjust` (an ISO
/// tool, a health snapshot).
pub fn instances_built(script: Scripted, config: InstancesConfig, adjust: impl FnOnce(&mut InstanceDeps)) -> Bench {
    let dir = tempfile::tempdir().unwrap();
    let paths = Paths::new(dir.path());
    paths.ensure().unwrap();
    let db = Db::open(&paths.database()).unwrap();
    let script = Arc::new(script);
    let virsh = Virsh::with_runner("test:///scripted", Duration::from_secs(5), script.clone());
    let qemu_img = QemuImg::new(Duration::from_secs(5));
    let host = Host::detect();
    let mut deps = InstanceDeps {
        db: db.clone(),
        paths: paths.clone(),
        virsh: virsh.clone(),
        qemu_img: qemu_img.clone(),
        images: Images::new(db.clone(), paths.clone(), host.arch, &ImagesConfig::default(), qemu_img),
        key_pairs: KeyPairs::new(db, paths.clone()),
        network: NetworkManager::new(virsh, NetworkConfig::default(), paths.clone(), NetworkMode::LibvirtNat),
        platform: host.guest_platform(Accelerator::Tcg, "/usr/bin/qemu-system-x86_64".into(), NetworkMode::LibvirtNat),
        iso_tool: None,
        health: Default::default(),
    };
    adjust(&mut deps);
    Bench { instances: Instances::new(deps, config), script, paths, _dir: dir }
}

impl Bench {
    /// Records `ID` as `state` (idle), with its address reserved and its directory made.
    pub async fn with_instance(self, state: &str) -> Self {
        self.with_busy_instance(state, None).await
    }

    /// Records `ID` as `state` with `task` in flight, as a restart finds it.
    pub async fn with_busy_instance(self, state: &str, task: Option<&str>) -> Self {
        let row = InstanceRow {
            id: ID.into(),
            name: "web".into(),
            instance_type: "t2.nano".into(),
            vcpus: 1,
            memory_mib: 512,
            disk_gib: 8,
            image_id: "ami-00000001".into(),
            image_name: "debian-12".into(),
            login_user: "admin".into(),
            key_name: None,
            public_key: None,
            user_data: None,
            state: state.into(),
            task: task.map(str::to_string),
            state_reason: None,
            mac_address: MAC.into(),
            reserved_ip: Some(IP.into()),
            ip_address: (state == "running").then(|| IP.into()),
            created_at: crate::db::timestamp_now(),
            launched_at: None,
            terminated_at: None,
            reservation_id: None,
            disable_api_termination: false,
            disable_api_stop: false,
            reachable_at: None,
            host_public_keys: Vec::new(),
            host_key: None,
        };
        self.instances.inner().deps.db.call(move |c| rows::insert(c, &row)).await.unwrap();
        std::fs::create_dir_all(self.instance_dir()).unwrap();
        self
    }

    pub fn instance_dir(&self) -> std::path::PathBuf {
        self.paths.instance_dir(&ID.parse().unwrap())
    }

    pub async fn row(&self) -> InstanceRow {
        self.instances.inner().row(ID).await.unwrap()
    }

    /// The row once the work in flight on it has ended.
    pub async fn settled(&self) -> InstanceRow {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let row = self.row().await;
            if row.task.is_none() && !self.instances.inner().has_ticket(ID) {
                return row;
            }
            assert!(Instant::now() < deadline, "still busy: {row:?}\nran: {:#?}", self.script.calls());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
