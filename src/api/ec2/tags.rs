//! CreateTags, DeleteTags and DescribeTags, on instances (the only tagged resources).

use super::Call;
use super::error::Ec2Error;
use super::form::passes_all;

fn instance_resources(call: &Call<'_>) -> Result<Vec<String>, Ec2Error> {
    let ids = call.params.list("ResourceId");
    if ids.is_empty() {
        return Err(Ec2Error::missing("ResourceId"));
    }
    if let Some(other) = ids.iter().find(|id| !id.starts_with("i-")) {
        return Err(Ec2Error::client(
            "InvalidID",
            format!("The ID '{other}' is not valid: only instances take tags here"),
        ));
    }
    for id in &ids {
        super::instances::checked_id(id)?;
    }
    Ok(ids)
}

/// A dry run of a tag change: every instance must exist.
async fn dry_run_on(call: &Call<'_>, ids: &[String]) -> Result<String, Ec2Error> {
    let all = call.app.instances.list(true).await?;
    if let Some(missing) = ids.iter().find(|id| !all.iter().any(|i| &i.id == *id)) {
        return Err(Ec2Error::client(
            "InvalidInstanceID.NotFound",
            format!("The instance ID '{missing}' does not exist"),
        ));
    }
    Err(Ec2Error::dry_run())
}

pub async fn create_tags(call: &Call<'_>) -> Result<String, Ec2Error> {
    let ids = instance_resources(call)?;
    let mut tags = Vec::new();
    for tag in call.params.structs("Tag") {
        tags.push((tag.require("Key")?.to_string(), tag.get("Value").unwrap_or_default().to_string()));
    }
    if call.params.bool("DryRun")? == Some(true) {
        crate::instances::tags::validate(&tags)?;
        return dry_run_on(call, &ids).await;
    }
    call.app.instances.create_tags(&ids, &tags).await?;
    Ok(call.respond(|x| x.bool("return", true)))
}

pub async fn delete_tags(call: &Call<'_>) -> Result<String, Ec2Error> {
    let ids = instance_resources(call)?;
    let keys: Vec<(String, Option<String>)> = call
        .params
        .structs("Tag")
        .into_iter()
        .filter_map(|t| Some((t.get("Key")?.to_string(), t.get("Value").map(str::to_string))))
        .collect();
    if call.params.bool("DryRun")? == Some(true) {
        return dry_run_on(call, &ids).await;
    }
    call.app.instances.delete_tags(&ids, &keys).await?;
    Ok(call.respond(|x| x.bool("return", true)))
}

pub async fn describe_tags(call: &Call<'_>) -> Result<String, Ec2Error> {
    let filters = call.params.filters(&["resource-id", "resource-type", "key", "value"])?;
    let instances = call.app.instances.list(false).await?;
    let tags = call.app.instances.tags(&instances).await?;
    let mut shown = Vec::new();
    for (id, pairs) in &tags {
        for (key, value) in pairs {
            let keep = passes_all(&filters, |name| {
                vec![match name {
                    "resource-id" => id.clone(),
                    "resource-type" => "instance".to_string(),
                    "key" => key.clone(),
                    _ => value.clone(),
                }]
            });
            if keep {
                shown.push((id, key, value));
            }
        }
    }
    call.stop_if_dry_run()?;
    Ok(call.respond(|x| {
        x.set("tagSet", shown, |x, (id, key, value)| {
            x.text("resourceId", id);
            x.text("resourceType", "instance");
            x.text("key", key);
            x.text("value", value);
        })
    }))
}
