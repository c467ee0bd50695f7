//! Templates → XML and cloud-init seed files. Pure: no processes, no files.
//!
//! The XML templates live in `xml-templates/` and are embedded at build time. Every
//! interpolated value is XML-escaped by the environment's formatter, so a name such
//! as `a'<b>` cannot break out of an attribute.

pub mod cloud_init;

use std::sync::OnceLock;

use minijinja::syntax::SyntaxConfig;
use minijinja::value::Serde;
use minijinja::{Environment, Value};
use serde::Serialize;

use crate::platform::GuestPlatform;

#[derive(Debug, thiserror::Error)]
#[error("rendering {template}: {source}")]
pub struct RenderError {
    template: &'static str,
    source: minijinja::Error,
}

const TEMPLATES: &[(&str, &str)] = &[
    ("domain.xml", include_str!("../../xml-templates/domain.xml")),
    ("network.xml", include_str!("../../xml-templates/network.xml")),
    ("pool.xml", include_str!("../../xml-templates/pool.xml")),
    ("dhcp-host.xml", include_str!("../../xml-templates/dhcp-host.xml")),
];

fn environment() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
        env.set_syntax(SyntaxConfig::builder().keep_trailing_newline(true).build().expect("valid syntax"));
        env.set_formatter(|out, _state, value| {
            let text = value.to_string();
            out.write_str(&quick_xml::escape::escape(text.as_str())).map_err(minijinja::Error::from)
        });
        for (name, source) in TEMPLATES {
            env.add_template(name, source).expect("embedded templates parse");
        }
        env
    })
}

fn render(template: &'static str, context: impl Serialize) -> Result<String, RenderError> {
    environment()
        .get_template(template)
        .and_then(|t| t.render(Value::from(Serde(&context))))
        .map_err(|source| RenderError { template, source })
}

/// The NAT network of REQ-NET-001/002.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct NetworkSpec {
    pub name: String,
    pub bridge: String,
    pub gateway: String,
    pub netmask: String,
    pub dhcp_start: String,
    pub dhcp_end: String,
    pub hosts: Vec<DhcpHost>,
    /// Options passed to libvirt's dnsmasq as they are (`<dnsmasq:options>`).
    pub dnsmasq_options: Vec<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct DhcpHost {
    pub mac: String,
    pub name: String,
    pub ip: String,
}

/// One DHCP reservation, as `virsh net-update … ip-dhcp-host` takes it.
pub fn dhcp_host_xml(host: &DhcpHost) -> Result<String, RenderError> {
    Ok(render("dhcp-host.xml", host)?.trim().to_string())
}

pub fn network_xml(spec: &NetworkSpec) -> Result<String, RenderError> {
    render("network.xml", spec)
}

/// The directory storage pool of REQ-STOR-001.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PoolSpec {
    pub name: String,
    pub path: String,
}

pub fn pool_xml(spec: &PoolSpec) -> Result<String, RenderError> {
    render("pool.xml", spec)
}

/// One instance's domain: what it is, plus where its files are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainSpec {
    pub name: String,
    pub title: String,
    pub instance_type: String,
    pub vcpus: u32,
    pub memory_mib: u64,
    pub mac_address: String,
    pub network: String,
    pub disk_path: String,
    pub cidata_path: String,
    pub console_log_path: String,
    /// The UEFI variable store of this instance (aarch64 only).
    pub nvram_path: String,
    /// Extra QEMU arguments (vmnet networking on macOS).
    pub qemu_args: Vec<String>,
}

#[derive(Serialize)]
struct DomainContext<'a> {
    name: &'a str,
    title: &'a str,
    instance_type: &'a str,
    vcpus: u32,
    memory_mib: u64,
    mac_address: &'a str,
    network: &'a str,
    disk_path: &'a str,
    cidata_path: &'a str,
    console_log_path: &'a str,
    qemu_args: &'a [String],
    domain_type: &'a str,
    arch: &'a str,
    machine: &'a str,
    emulator: String,
    firmware_efi: bool,
    loader_path: String,
    nvram_template: String,
    nvram_path: &'a str,
    cdrom_bus: &'a str,
    cdrom_target: &'a str,
    cpu_mode: Option<&'static str>,
    libvirt_network: bool,
}

pub fn domain_xml(spec: &DomainSpec, platform: &GuestPlatform) -> Result<String, RenderError> {
    let context = DomainContext {
        name: &spec.name,
        title: &spec.title,
        instance_type: &spec.instance_type,
        vcpus: spec.vcpus,
        memory_mib: spec.memory_mib,
        mac_address: &spec.mac_address,
        network: &spec.network,
        disk_path: &spec.disk_path,
        cidata_path: &spec.cidata_path,
        console_log_path: &spec.console_log_path,
        qemu_args: &spec.qemu_args,
        domain_type: platform.domain_type,
        arch: platform.arch.libvirt_name(),
        machine: platform.machine,
        emulator: platform.emulator.to_string_lossy().into_owned(),
        firmware_efi: platform.efi.is_some(),
        loader_path: platform.efi.as_ref().map(|e| e.loader.to_string_lossy().into_owned()).unwrap_or_default(),
        nvram_template: platform
            .efi
            .as_ref()
            .map(|e| e.vars_template.to_string_lossy().into_owned())
            .unwrap_or_default(),
        nvram_path: &spec.nvram_path,
        cdrom_bus: platform.cdrom_bus,
        cdrom_target: platform.cdrom_target,
        cpu_mode: platform.cpu_mode,
        libvirt_network: platform.network.uses_libvirt_network(),
    };
    render("domain.xml", context)
}

#[cfg(test)]
mod tests;
