//! Instances through EC2: RunInstances and DescribeInstances, and how an instance is
//! written (its state as EC2 names it, its tags, placement and the rest). Each handler
//! parses, calls the instance service and writes the answer.

use std::collections::{BTreeMap, HashMap};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;

use super::error::Ec2Error;
use super::form::{Params, passes_all};
use super::xml::{Xml, timestamp};
use super::{Call, OWNER_ID};
use crate::instances::run::{MAX_COUNT, Reservation, RunRequest};
use crate::instances::state::{State, Task};
use crate::instances::{Instance, LaunchRequest};

/// Terminated instances stay listed this long, as on AWS.
const TERMINATED_LISTED_FOR: chrono::Duration = chrono::Duration::hours(1);

/// An instance's state as EC2 names and numbers it. Our `error` is not EC2's: a launch
/// that failed shows as terminated, an instance that had run as stopped.
pub fn ec2_state(i: &Instance) -> (i64, &'static str) {
    if i.task == Some(Task::Terminating) && i.state != State::Terminated {
        return (32, "shutting-down");
    }
    match i.state {
        State::Pending => (0, "pending"),
        State::Running => (16, "running"),
        State::Stopping => (64, "stopping"),
        State::Stopped => (80, "stopped"),
        State::Terminated => (48, "terminated"),
        State::Error if i.launched_at.is_some() => (80, "stopped"),
        State::Error => (48, "terminated"),
    }
}

/// EC2's `stateReason`, when there is one to give.
fn state_reason(i: &Instance) -> Option<(&'static str, String)> {
    let reason = i.state_reason.clone();
    match i.state {
        State::Error => Some(("Server.InternalError", reason.unwrap_or_else(|| "Server.InternalError".into()))),
        State::Terminated => {
            Some(("Client.UserInitiatedShutdown", "Client.UserInitiatedShutdown: User initiated shutdown".into()))
        }
        State::Stopped => reason.map(|r| ("Client.InstanceInitiatedShutdown", r)),
        _ => None,
    }
}

/// The instance ids of `InstanceId.N`: ours are `i-` and 8 hex digits; AWS's longer
/// form is well-formed but can only name an instance we do not have.
pub(super) fn instance_ids(params: &Params) -> Result<Vec<String>, Ec2Error> {
    let ids = params.list("InstanceId");
    for id in &ids {
        let hex = id.strip_prefix("i-").unwrap_or_default();
        let well_formed = matches!(hex.len(), 8 | 17) && hex.chars().all(|c| c.is_ascii_hexdigit());
        if !well_formed {
            return Err(Ec2Error::client("InvalidInstanceID.Malformed", format!("Invalid id: \"{id}\"")));
        }
    }
    Ok(ids)
}

/// One instance id, checked: malformed, or AWS's long form (which names no instance of
/// ours), is refused before any lookup.
pub(super) fn checked_id(id: &str) -> Result<String, Ec2Error> {
    let ids = instance_ids(&Params::from_list("InstanceId", &[id]))?;
    if ids[0].len() != "i-12345678".len() {
        return Err(Ec2Error::client("InvalidInstanceID.NotFound", format!("The instance ID '{id}' does not exist")));
    }
    Ok(id.to_string())
}

/// The instances named, all of them, or the error naming every unknown id.
pub(super) async fn named(call: &Call<'_>) -> Result<Vec<Instance>, Ec2Error> {
    let mut ids = instance_ids(&call.params)?;
    // An id given twice is one instance (and one action on it).
    let mut seen = std::collections::HashSet::new();
    ids.retain(|id| seen.insert(id.clone()));
    if ids.is_empty() {
        return Err(Ec2Error::missing("InstanceId"));
    }
    let all = call.app.instances.list(true).await?;
    let mut found = Vec::new();
    let mut missing = Vec::new();
    for id in ids {
        match all.iter().find(|i| i.id == id) {
            Some(i) => found.push(i.clone()),
            None => missing.push(id),
        }
    }
    match missing.len() {
        0 => Ok(found),
        1 => Err(Ec2Error::client(
            "InvalidInstanceID.NotFound",
            format!("The instance ID '{}' does not exist", missing[0]),
        )),
        _ => Err(Ec2Error::client(
            "InvalidInstanceID.NotFound",
            format!("The instance IDs '{}' do not exist", missing.join(", ")),
        )),
    }
}

/// What instances are shown with: tags and the architecture of their image.
struct Context {
    tags: BTreeMap<String, BTreeMap<String, String>>,
    architectures: HashMap<String, String>,
    zone: String,
    host_arch: &'static str,
}

async fn context(call: &Call<'_>, instances: &[Instance]) -> Result<Context, Ec2Error> {
    let tags = call.app.instances.tags(instances).await?;
    let architectures =
        call.app.images.list().await?.into_iter().map(|i| (i.row.id.clone(), i.row.architecture.clone())).collect();
    Ok(Context { tags, architectures, zone: call.zone(), host_arch: call.app.host.arch.libvirt_name() })
}

fn write_instance(x: &mut Xml, i: &Instance, index: usize, ctx: &Context, client_token: Option<&str>) {
    let (code, name) = ec2_state(i);
    x.text("instanceId", &i.id);
    x.text("imageId", &i.image_id);
    x.elem("instanceState", |x| {
        x.int("code", code);
        x.text("name", name);
    });
    let ip = i.ip_address.as_deref().filter(|_| code == 16 || code == 0 || code == 64);
    x.text("privateDnsName", &ip.map(|ip| format!("ip-{}.ec2.internal", ip.replace('.', "-"))).unwrap_or_default());
    x.text("dnsName", "");
    x.text("reason", "");
    x.opt("keyName", i.key_name.as_deref());
    x.int("amiLaunchIndex", index as i64);
    x.set("productCodes", Vec::<()>::new(), |_, _| {});
    x.text("instanceType", &i.instance_type);
    x.text("launchTime", &timestamp(i.launched_at.as_deref().unwrap_or(&i.created_at)));
    x.elem("placement", |x| {
        x.text("availabilityZone", &ctx.zone);
        x.text("groupName", "");
        x.text("tenancy", "default");
    });
    x.elem("monitoring", |x| x.text("state", "disabled"));
    x.opt("privateIpAddress", ip);
    x.set("groupSet", Vec::<()>::new(), |_, _| {});
    let arch = ctx.architectures.get(&i.image_id).map(String::as_str).unwrap_or(ctx.host_arch);
    x.text("architecture", super::ec2_arch(arch));
    x.text("rootDeviceType", "ebs");
    x.text("rootDeviceName", "/dev/sda1");
    x.text("virtualizationType", "hvm");
    x.text("hypervisor", "xen");
    x.opt("clientToken", client_token);
    let tags = ctx.tags.get(&i.id);
    x.set("tagSet", tags.into_iter().flatten(), |x, (k, v)| {
        x.text("key", k);
        x.text("value", v);
    });
    if let Some((code, message)) = state_reason(i) {
        x.elem("stateReason", |x| {
            x.text("code", code);
            x.text("message", &message);
        });
    }
    x.bool("ebsOptimized", false);
    x.bool("enaSupport", false);
    x.elem("cpuOptions", |x| {
        x.int("coreCount", i.vcpus as i64);
        x.int("threadsPerCore", 1);
    });
    x.elem("capacityReservationSpecification", |x| x.text("capacityReservationPreference", "open"));
    x.elem("hibernationOptions", |x| x.bool("configured", false));
    x.elem("metadataOptions", |x| {
        x.text("state", "applied");
        x.text("httpTokens", "optional");
        x.int("httpPutResponseHopLimit", 1);
        x.text("httpEndpoint", "disabled");
        x.text("httpProtocolIpv6", "disabled");
        x.text("instanceMetadataTags", "disabled");
    });
    x.elem("enclaveOptions", |x| x.bool("enabled", false));
    x.text("platformDetails", "Linux/UNIX");
    x.text("usageOperation", "RunInstances");
    x.elem("maintenanceOptions", |x| x.text("autoRecovery", "default"));
    x.elem("privateDnsNameOptions", |x| {
        x.text("hostnameType", "ip-name");
        x.bool("enableResourceNameDnsARecord", false);
        x.bool("enableResourceNameDnsAAAARecord", false);
    });
}

fn write_reservation(x: &mut Xml, reservation_id: &str, instances: &[&Instance], ctx: &Context, token: Option<&str>) {
    x.text("reservationId", reservation_id);
    x.text("ownerId", OWNER_ID);
    x.set("groupSet", Vec::<()>::new(), |_, _| {});
    x.set("instancesSet", instances.iter().enumerate(), |x, (n, i)| write_instance(x, i, n, ctx, token));
}

/// Tags for instances from `TagSpecification.N` (other resource types are ignored).
fn instance_tags(params: &Params) -> Result<Vec<(String, String)>, Ec2Error> {
    let mut tags = Vec::new();
    for spec in params.structs("TagSpecification") {
        if spec.get("ResourceType").unwrap_or("instance") != "instance" {
            continue;
        }
        for tag in spec.structs("Tag") {
            tags.push((tag.require("Key")?.to_string(), tag.get("Value").unwrap_or_default().to_string()));
        }
    }
    Ok(tags)
}

fn decode_base64(parameter: &str, value: &str) -> Result<Vec<u8>, Ec2Error> {
    BASE64.decode(value.trim()).map_err(|_| Ec2Error::invalid_value(parameter, "…", "it is not valid base64"))
}

pub async fn run_instances(call: &Call<'_>) -> Result<String, Ec2Error> {
    let p = &call.params;
    let image = p.require("ImageId")?.to_string();
    let count = |key: &str| -> Result<u32, Ec2Error> {
        let n = p.int(key)?.ok_or_else(|| Ec2Error::missing(key))?;
        u32::try_from(n)
            .ok()
            .filter(|n| *n >= 1)
            .ok_or_else(|| Ec2Error::invalid_value(key, &n.to_string(), "it must be at least 1"))
    };
    let min_count = count("MinCount")?;
    if min_count > MAX_COUNT {
        let why = format!("at most {MAX_COUNT} instances are launched per request");
        return Err(Ec2Error::invalid_value("MinCount", &min_count.to_string(), &why));
    }
    // As many as asked, up to the limit per request (as EC2 caps at the account's limit).
    let max_count = count("MaxCount")?.min(MAX_COUNT);
    if min_count > max_count {
        return Err(Ec2Error::client("InvalidParameterValue", "MinCount must not be greater than MaxCount"));
    }
    if let Some(zone) = p.get("Placement.AvailabilityZone")
        && zone != call.zone()
    {
        return Err(Ec2Error::client(
            "InvalidParameterValue",
            format!("Invalid availability zone: [{zone}]; this region has {}", call.zone()),
        ));
    }
    let user_data = match p.get("UserData") {
        Some(encoded) => Some(
            String::from_utf8(decode_base64("UserData", encoded)?)
                .map_err(|_| Ec2Error::client("InvalidUserData.Malformed", "User data must be UTF-8 text"))?,
        ),
        None => None,
    };
    let run = RunRequest {
        launch: LaunchRequest {
            instance_type: p.get("InstanceType").unwrap_or("t2.micro").to_string(),
            image: image.clone(),
            name: None,
            key_name: p.get("KeyName").map(str::to_string),
            user_data,
        },
        tags: instance_tags(p)?,
        min_count,
        max_count,
        client_token: p.get("ClientToken").map(str::to_string),
        digest: p.digest(),
        disable_api_termination: p.bool("DisableApiTermination")?.unwrap_or(false),
        disable_api_stop: p.bool("DisableApiStop")?.unwrap_or(false),
    };
    if p.bool("DryRun")? == Some(true) {
        // Everything the launch would check of the request, short of launching.
        crate::instances::create::validate(&run.launch)?;
        if let Some(key) = &run.launch.key_name {
            call.app.key_pairs.get(key).await?;
        }
        call.app.images.resolve_for_launch(&image).await?;
        crate::instances::tags::validate(&run.tags)?;
        return Err(Ec2Error::dry_run());
    }
    let reservation = call.app.instances.run(run).await?;
    let ctx = context(call, &reservation.instances).await?;
    let Reservation { id, client_token, instances } = &reservation;
    let refs: Vec<&Instance> = instances.iter().collect();
    Ok(call.respond(|x| write_reservation(x, id, &refs, &ctx, client_token.as_deref())))
}

/// An instance's values for a filter (names checked by `Params::filters`).
fn filter_values(i: &Instance, name: &str, ctx: &Context) -> Vec<String> {
    let tags = ctx.tags.get(&i.id);
    let (code, state) = ec2_state(i);
    let one = |value: &str| -> Vec<String> { vec![value.to_string()] };
    match name {
        "instance-id" => one(&i.id),
        "instance-state-name" => one(state),
        "instance-state-code" => one(&code.to_string()),
        "instance-type" => one(&i.instance_type),
        "image-id" => one(&i.image_id),
        "key-name" => i.key_name.iter().cloned().collect(),
        "availability-zone" => one(&ctx.zone),
        "private-ip-address" => i.ip_address.iter().cloned().collect(),
        "reservation-id" => i.reservation_id.iter().cloned().collect(),
        "tag-key" => tags.into_iter().flat_map(|t| t.keys().cloned()).collect(),
        "tag-value" => tags.into_iter().flat_map(|t| t.values().cloned()).collect(),
        other => {
            let key = other.strip_prefix("tag:").unwrap_or_default();
            tags.and_then(|t| t.get(key)).cloned().into_iter().collect()
        }
    }
}

/// A page of a list: MaxResults (5–1000) with an opaque NextToken, the offset encoded.
fn page<T>(items: Vec<T>, params: &Params) -> Result<(Vec<T>, Option<String>), Ec2Error> {
    let max = match params.int("MaxResults")? {
        // Without MaxResults everything fits one page; a token given still has to be ours.
        None if params.get("NextToken").is_none() => return Ok((items, None)),
        None => usize::MAX,
        Some(n) if (5..=1000).contains(&n) => n as usize,
        Some(n) => return Err(Ec2Error::invalid_value("MaxResults", &n.to_string(), "it must be between 5 and 1000")),
    };
    let start = match params.get("NextToken") {
        None => 0,
        Some(token) => base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|s| s.strip_prefix("offset:").and_then(|n| n.parse::<usize>().ok()))
            .filter(|n| *n <= items.len())
            .ok_or_else(|| Ec2Error::invalid_value("NextToken", token, "it is not a token this service gave"))?,
    };
    let end = start.saturating_add(max).min(items.len());
    let next =
        (end < items.len()).then(|| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("offset:{end}")));
    Ok((items.into_iter().skip(start).take(max).collect(), next))
}

pub async fn describe_instances(call: &Call<'_>) -> Result<String, Ec2Error> {
    let p = &call.params;
    let ids = instance_ids(p)?;
    if !ids.is_empty() && p.get("MaxResults").is_some() {
        return Err(Ec2Error::client(
            "InvalidParameterCombination",
            "The parameter instancesSet cannot be used with the parameter maxResults",
        ));
    }
    let filters = p.filters(&[
        "instance-id",
        "instance-state-name",
        "instance-state-code",
        "instance-type",
        "image-id",
        "key-name",
        "availability-zone",
        "private-ip-address",
        "reservation-id",
        "tag-key",
        "tag-value",
        "tag:",
    ])?;
    let instances = if ids.is_empty() {
        let cutoff = chrono::Utc::now() - TERMINATED_LISTED_FOR;
        let recent = |i: &Instance| {
            i.state != State::Terminated
                || i.terminated_at
                    .as_deref()
                    .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                    .is_none_or(|t| t > cutoff)
        };
        call.app.instances.list(true).await?.into_iter().filter(recent).collect()
    } else {
        named(call).await?
    };
    call.stop_if_dry_run()?;
    let ctx = context(call, &instances).await?;
    let matching: Vec<Instance> =
        instances.into_iter().filter(|i| passes_all(&filters, |name| filter_values(i, name, &ctx))).collect();
    let (shown, next) = page(matching, p)?;
    // Grouped by reservation, in the order the first of each was launched.
    let mut order: Vec<String> = Vec::new();
    let mut groups: HashMap<String, Vec<&Instance>> = HashMap::new();
    for i in &shown {
        let key = i.reservation_id.clone().unwrap_or_else(|| format!("r-{}", i.id.trim_start_matches("i-")));
        if !groups.contains_key(&key) {
            order.push(key.clone());
        }
        groups.entry(key).or_default().push(i);
    }
    Ok(call.respond(|x| {
        x.set("reservationSet", &order, |x, id| write_reservation(x, id, &groups[id], &ctx, None));
        x.opt("nextToken", next.as_deref());
    }))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::exec::scripted::Scripted;
    use crate::instances::testbench::instances_over;

    #[tokio::test]
    async fn only_ec2s_states_are_on_the_wire() {
        let bench = instances_over(Scripted::default(), Duration::from_secs(1)).with_instance("error").await;
        let mut i = bench.instances.inner().describe(bench.row().await);
        i.state_reason = Some("launch failed: no space".into());
        // A launch that failed never ran: terminated, with our reason.
        assert_eq!(ec2_state(&i), (48, "terminated"));
        assert_eq!(state_reason(&i), Some(("Server.InternalError", "launch failed: no space".to_string())));
        // One that had run: stopped.
        i.launched_at = Some("2026-11-26T00:00:00Z".into());
        assert_eq!(ec2_state(&i), (80, "stopped"));
        let cases = [
            (State::Pending, None, (0, "pending")),
            (State::Running, None, (16, "running")),
            (State::Running, Some(Task::Rebooting), (16, "running")),
            (State::Running, Some(Task::Terminating), (32, "shutting-down")),
            (State::Stopping, Some(Task::Stopping), (64, "stopping")),
            (State::Stopped, None, (80, "stopped")),
            (State::Terminated, None, (48, "terminated")),
        ];
        for (state, task, wire) in cases {
            (i.state, i.task) = (state, task);
            assert_eq!(ec2_state(&i), wire, "{state:?} {task:?}");
        }
    }

    #[test]
    fn pages_carry_an_opaque_offset_and_refuse_forged_tokens() {
        let items: Vec<u32> = (0..12).collect();
        let (first, token) = page(items.clone(), &Params::from_pairs(&[("MaxResults", "5")])).unwrap();
        assert_eq!(first, [0, 1, 2, 3, 4]);
        let token = token.unwrap();
        let (second, next) =
            page(items.clone(), &Params::from_pairs(&[("MaxResults", "5"), ("NextToken", &token)])).unwrap();
        assert_eq!((second, next.is_some()), (vec![5, 6, 7, 8, 9], true));
        for bad in [("MaxResults", "4"), ("MaxResults", "1001")] {
            assert_eq!(page(items.clone(), &Params::from_pairs(&[bad])).unwrap_err().code, "InvalidParameterValue");
        }
        let forged = Params::from_pairs(&[("NextToken", "b2Zmc2V0Ojk5OQ")]); // "offset:999"
        assert_eq!(page(items, &forged).unwrap_err().code, "InvalidParameterValue");
    }
}
