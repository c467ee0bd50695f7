//! DescribeRegions and DescribeAvailabilityZones: the caller's region, one zone in it.

use super::Call;
use super::error::Ec2Error;

pub async fn describe_regions(call: &Call<'_>) -> Result<String, Ec2Error> {
    let wanted = call.params.list("RegionName");
    call.stop_if_dry_run()?;
    let mut regions = vec![call.region.clone()];
    if call.region != super::DEFAULT_REGION {
        regions.push(super::DEFAULT_REGION.to_string());
    }
    regions.retain(|r| wanted.is_empty() || wanted.contains(r));
    Ok(call.respond(|x| {
        x.set("regionInfo", &regions, |x, region| {
            x.text("regionName", region);
            x.text("regionEndpoint", "localhost");
            x.text("optInStatus", "opt-in-not-required");
        })
    }))
}

pub async fn describe_availability_zones(call: &Call<'_>) -> Result<String, Ec2Error> {
    let zone = call.zone();
    let wanted = call.params.list("ZoneName");
    if let Some(other) = wanted.iter().find(|z| **z != zone) {
        return Err(Ec2Error::client(
            "InvalidParameterValue",
            format!("The zone '{other}' does not exist; this region has {zone}"),
        ));
    }
    call.stop_if_dry_run()?;
    Ok(call.respond(|x| {
        x.set("availabilityZoneInfo", [&zone], |x, zone| {
            x.text("optInStatus", "opt-in-not-required");
            x.set("messageSet", Vec::<()>::new(), |_, _| {});
            x.text("regionName", &call.region);
            x.text("zoneName", zone);
            x.text("zoneId", &format!("{}-az1", call.region));
            x.text("groupName", &call.region);
            x.text("networkBorderGroup", &call.region);
            x.text("zoneType", "availability-zone");
            x.text("zoneState", "available");
        })
    }))
}
