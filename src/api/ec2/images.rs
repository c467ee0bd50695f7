//! DescribeImages: the catalog and imported images as AMIs.

use super::error::Ec2Error;
use super::form::passes_all;
use super::xml::timestamp;
use super::{Call, OWNER_ID};
use crate::images::Image;

/// `available` once its file is here; a catalog image not yet pulled is `pending`.
fn image_state(image: &Image) -> &'static str {
    if image.available { "available" } else { "pending" }
}

pub async fn describe_images(call: &Call<'_>) -> Result<String, Ec2Error> {
    let p = &call.params;
    let ids = p.list("ImageId");
    let owners = p.list("Owner");
    let filters = p.filters(&["name", "image-id", "state", "architecture", "owner-id", "description"])?;
    let all = call.app.images.list().await?;
    for id in &ids {
        if !all.iter().any(|i| &i.row.id == id) {
            return Err(Ec2Error::client("InvalidAMIID.NotFound", format!("The image id '[{id}]' does not exist")));
        }
    }
    let mut shown = Vec::new();
    for image in all {
        let mut keep = ids.is_empty() || ids.contains(&image.row.id);
        // Every image here is the local account's own ("self").
        keep &= owners.is_empty() || owners.iter().any(|o| o == "self" || o == OWNER_ID);
        keep &= passes_all(&filters, |name| {
            vec![match name {
                "name" => image.row.name.clone(),
                "image-id" => image.row.id.clone(),
                "state" => image_state(&image).to_string(),
                "architecture" => super::ec2_arch(&image.row.architecture).to_string(),
                "owner-id" => OWNER_ID.to_string(),
                _ => image.row.description.clone(),
            }]
        });
        if keep {
            shown.push(image);
        }
    }
    call.stop_if_dry_run()?;
    Ok(call.respond(|x| {
        x.set("imagesSet", &shown, |x, image| {
            let row = &image.row;
            x.text("imageId", &row.id);
            x.text("imageLocation", &format!("{OWNER_ID}/{}", row.name));
            x.text("imageState", image_state(image));
            x.text("imageOwnerId", OWNER_ID);
            x.text("creationDate", &timestamp(&row.created_at));
            x.bool("isPublic", false);
            x.text("architecture", super::ec2_arch(&row.architecture));
            x.text("imageType", "machine");
            x.text("name", &row.name);
            x.text("description", &row.description);
            x.text("platformDetails", "Linux/UNIX");
            x.text("usageOperation", "RunInstances");
            x.text("rootDeviceType", "ebs");
            x.text("rootDeviceName", "/dev/sda1");
            x.text("virtualizationType", "hvm");
            x.text("hypervisor", "xen");
            x.bool("enaSupport", false);
            x.set("tagSet", Vec::<()>::new(), |_, _| {});
            if let Some(reason) = &image.unavailable_reason {
                x.elem("stateReason", |x| {
                    x.text("code", "Client.ImageNotDownloaded");
                    x.text("message", reason);
                });
            }
        })
    }))
}
