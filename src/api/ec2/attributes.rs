//! What EC2 reads about an instance besides DescribeInstances: its attributes (and the
//! two it may change, the protections), credit specification, the instance types, and
//! the console.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;

use super::Call;
use super::error::Ec2Error;
use super::instances::{checked_id, instance_ids, named};
use super::xml::{Xml, timestamp};
use crate::instances::types;

pub async fn describe_instance_attribute(call: &Call<'_>) -> Result<String, Ec2Error> {
    let id = checked_id(call.params.require("InstanceId")?)?;
    let attribute = call.params.require("Attribute")?.to_string();
    let i = call.app.instances.get(&id).await?;
    let value = |x: &mut Xml, name: &str, v: &str| x.elem(name, |x| x.text("value", v));
    let flag = |x: &mut Xml, name: &str, v: bool| x.elem(name, |x| x.bool("value", v));
    let known = [
        "instanceType",
        "kernel",
        "ramdisk",
        "userData",
        "disableApiTermination",
        "disableApiStop",
        "instanceInitiatedShutdownBehavior",
        "rootDeviceName",
        "blockDeviceMapping",
        "productCodes",
        "sourceDestCheck",
        "groupSet",
        "ebsOptimized",
        "sriovNetSupport",
        "enaSupport",
        "enclaveOptions",
    ];
    if !known.contains(&attribute.as_str()) {
        return Err(Ec2Error::invalid_value("Attribute", &attribute, &format!("one of {}", known.join(", "))));
    }
    call.stop_if_dry_run()?;
    Ok(call.respond(|x| {
        x.text("instanceId", &i.id);
        match attribute.as_str() {
            "instanceType" => value(x, "instanceType", &i.instance_type),
            "kernel" => x.elem("kernel", |_| {}),
            "ramdisk" => x.elem("ramdisk", |_| {}),
            "userData" => match &i.user_data {
                Some(data) => value(x, "userData", &BASE64.encode(data)),
                None => x.elem("userData", |_| {}),
            },
            "disableApiTermination" => flag(x, "disableApiTermination", i.disable_api_termination),
            "disableApiStop" => flag(x, "disableApiStop", i.disable_api_stop),
            "instanceInitiatedShutdownBehavior" => value(x, "instanceInitiatedShutdownBehavior", "stop"),
            "rootDeviceName" => value(x, "rootDeviceName", "/dev/sda1"),
            "blockDeviceMapping" => x.set("blockDeviceMapping", Vec::<()>::new(), |_, _| {}),
            "productCodes" => x.set("productCodes", Vec::<()>::new(), |_, _| {}),
            "sourceDestCheck" => flag(x, "sourceDestCheck", true),
            "groupSet" => x.set("groupSet", Vec::<()>::new(), |_, _| {}),
            "ebsOptimized" => flag(x, "ebsOptimized", false),
            "enaSupport" => flag(x, "enaSupport", false),
            "enclaveOptions" => x.elem("enclaveOptions", |x| x.bool("enabled", false)),
            _ => x.elem("sriovNetSupport", |_| {}),
        }
    }))
}

pub async fn modify_instance_attribute(call: &Call<'_>) -> Result<String, Ec2Error> {
    let p = &call.params;
    let id = checked_id(p.require("InstanceId")?)?;
    call.app.instances.get(&id).await?;
    // Either `DisableApiTermination.Value=true` or `Attribute=disableApiTermination&Value=true`.
    let setting = |structure: &str, attribute: &str| -> Result<Option<bool>, Ec2Error> {
        match p.bool(&format!("{structure}.Value"))? {
            Some(v) => Ok(Some(v)),
            None if p.get("Attribute") == Some(attribute) => p.bool("Value"),
            None => Ok(None),
        }
    };
    let termination = setting("DisableApiTermination", "disableApiTermination")?;
    let stop = setting("DisableApiStop", "disableApiStop")?;
    let changes_type = p.get("InstanceType.Value").is_some() || p.get("Attribute") == Some("instanceType");
    if changes_type {
        return Err(Ec2Error::unsupported("Changing an instance's type is not supported; launch a new instance."));
    }
    call.stop_if_dry_run()?;
    if termination.is_some() || stop.is_some() {
        call.app.instances.set_protection(&id, termination, stop).await?;
    }
    Ok(call.respond(|x| x.bool("return", true)))
}

pub async fn describe_credit_specifications(call: &Call<'_>) -> Result<String, Ec2Error> {
    let instances = if instance_ids(&call.params)?.is_empty() {
        call.app.instances.list(false).await?
    } else {
        named(call).await?
    };
    call.stop_if_dry_run()?;
    Ok(call.respond(|x| {
        x.set("instanceCreditSpecificationSet", &instances, |x, i| {
            x.text("instanceId", &i.id);
            x.text("cpuCredits", "standard");
        })
    }))
}

pub async fn describe_instance_types(call: &Call<'_>) -> Result<String, Ec2Error> {
    let wanted = call.params.list("InstanceType");
    for name in &wanted {
        if types::find(name).is_none() {
            return Err(Ec2Error::invalid_value("InstanceType", name, "not an instance type this host offers"));
        }
    }
    call.stop_if_dry_run()?;
    let arch = super::ec2_arch(call.app.host.arch.libvirt_name());
    let shown: Vec<_> =
        types::INSTANCE_TYPES.iter().filter(|t| wanted.is_empty() || wanted.iter().any(|w| w == t.name)).collect();
    Ok(call.respond(|x| {
        x.set("instanceTypeSet", shown, |x, t| {
            x.text("instanceType", t.name);
            x.bool("currentGeneration", true);
            x.bool("freeTierEligible", t.name == "t2.micro");
            x.strings("supportedUsageClasses", ["on-demand"]);
            x.strings("supportedRootDeviceTypes", ["ebs"]);
            x.strings("supportedVirtualizationTypes", ["hvm"]);
            x.bool("bareMetal", false);
            x.text("hypervisor", "xen");
            x.elem("processorInfo", |x| x.strings("supportedArchitectures", [arch]));
            x.elem("vCpuInfo", |x| {
                x.int("defaultVCpus", t.vcpus as i64);
                x.int("defaultCores", t.vcpus as i64);
                x.int("defaultThreadsPerCore", 1);
            });
            x.elem("memoryInfo", |x| x.int("sizeInMiB", t.memory_mib as i64));
            x.bool("instanceStorageSupported", false);
            x.bool("hibernationSupported", false);
            x.bool("burstablePerformanceSupported", true);
            x.bool("dedicatedHostsSupported", false);
            x.bool("autoRecoverySupported", false);
        })
    }))
}

pub async fn get_console_output(call: &Call<'_>) -> Result<String, Ec2Error> {
    let id = checked_id(call.params.require("InstanceId")?)?;
    let output = call.app.instances.console_output(&id).await?;
    call.stop_if_dry_run()?;
    Ok(call.respond(|x| {
        x.text("instanceId", &id);
        x.text("timestamp", &timestamp(&crate::db::timestamp_now()));
        x.text("output", &BASE64.encode(output));
    }))
}
