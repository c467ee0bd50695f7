//! /api/instances and /api/instance-types.

use super::strict::{Text, field};
use std::sync::Arc;

use poem::web::Data;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi};

use super::ApiTags;
use super::error::ApiError;
use super::serde_payload::SerdeJson;
use crate::app::App;
use crate::instances::{Instance, LaunchRequest, types};

pub struct InstancesApi;

#[derive(Debug, Object)]
pub struct InstanceTypeDto {
    pub name: String,
    pub vcpus: u32,
    pub memory_mib: u64,
    pub disk_gib: u64,
}

#[derive(Debug, Object)]
pub struct LaunchInstanceRequest {
    /// t2.nano, t2.micro, t2.small, t2.medium or t2.large.
    pub instance_type: Text<field::InstanceType>,
    /// The image's id (`ami-…`) or name.
    pub image_id: Text<field::ImageId>,
    /// Up to 255 characters, no control characters.
    pub name: Option<Text<field::Name>>,
    /// A key pair whose public key is installed for the image's default user.
    pub key_name: Option<Text<field::KeyName>>,
    /// cloud-init user data (`#cloud-config`, a `#!` script, ...), up to 16 KiB, passed
    /// to the guest unchanged.
    pub user_data: Option<Text<field::UserData>>,
}

/// Also `Serialize`: the list is printed by serde (`SerdeJson`), to the same document.
#[derive(Debug, Object, serde::Serialize)]
pub struct InstanceDto {
    /// `i-` + 8 hex.
    pub id: String,
    pub name: String,
    pub instance_type: String,
    pub vcpus: u32,
    pub memory_mib: i64,
    pub disk_gib: i64,
    /// pending, running, stopping, stopped, error or terminated.
    pub state: String,
    /// What ec2local is doing to it, if anything: launching, starting, stopping,
    /// rebooting, terminating, or cleaning-up (a failed launch waiting for libvirt).
    pub task: Option<String>,
    /// Why the instance is in its state, when that needs saying (errors, forced stops).
    pub state_reason: Option<String>,
    /// The guest's address on the ec2-as-service network while it runs.
    pub ip_address: Option<String>,
    pub mac_address: String,
    pub key_name: Option<String>,
    pub image_id: String,
    pub image_name: String,
    /// The user to log in as (the image's default user).
    pub login_user: String,
    pub created_at: String,
    pub launched_at: Option<String>,
    pub terminated_at: Option<String>,
    /// Whether the instance can be used yet, as EC2's status checks: `initializing`
    /// until SSH answers and cloud-init has finished, then `ok`; `impaired` when SSH did
    /// not answer within the status timeout (300 s by default, from its launch, start or
    /// reboot), or stopped answering; `not-applicable` when it is not running.
    pub status: String,
    /// Why it is `initializing` or `impaired` ("waiting for SSH", "waiting for cloud-init
    /// to finish", "SSH did not answer within 300 s", "SSH stopped answering", "host key
    /// changed"); null when `ok` or `not-applicable`.
    pub status_reason: Option<String>,
    /// When SSH first answered since the instance was last launched, started or
    /// rebooted; null until then and while it is not running.
    pub reachable_at: Option<String>,
    /// The guest's SSH host public keys (`ssh-ed25519 AAAA…`, no comment) as cloud-init
    /// printed them on the console, else as its SSH server showed on first contact; for a
    /// known_hosts line `IP KEY`. Empty until known; kept across stop and start.
    pub host_keys: Vec<String>,
}

impl From<Instance> for InstanceDto {
    fn from(i: Instance) -> Self {
        InstanceDto {
            id: i.id,
            name: i.name,
            instance_type: i.instance_type,
            vcpus: i.vcpus,
            memory_mib: i.memory_mib,
            disk_gib: i.disk_gib,
            state: i.state.as_str().into(),
            task: i.task.map(|t| t.as_str().to_string()),
            state_reason: i.state_reason,
            ip_address: i.ip_address,
            mac_address: i.mac_address,
            key_name: i.key_name,
            image_id: i.image_id,
            image_name: i.image_name,
            login_user: i.login_user,
            created_at: i.created_at,
            launched_at: i.launched_at,
            terminated_at: i.terminated_at,
            status: i.status_check.status.as_str().into(),
            status_reason: i.status_check.reason,
            reachable_at: i.status_check.reachable_at,
            host_keys: i.host_keys,
        }
    }
}

#[derive(Debug, Object)]
pub struct ConsoleOutputDto {
    pub instance_id: String,
    /// The last 64 KiB of the guest's serial console.
    pub output: String,
}

#[derive(ApiResponse)]
pub enum Accepted {
    /// Accepted; the work goes on in the background. Follow the instance's state.
    #[oai(status = 202)]
    Accepted(Json<InstanceDto>),
}

#[OpenApi(tag = "ApiTags::Instances")]
impl InstancesApi {
    /// The instance types.
    #[oai(path = "/instance-types", method = "get")]
    async fn instance_types(&self) -> Json<Vec<InstanceTypeDto>> {
        Json(
            types::INSTANCE_TYPES
                .iter()
                .map(|t| InstanceTypeDto {
                    name: t.name.into(),
                    vcpus: t.vcpus,
                    memory_mib: t.memory_mib,
                    disk_gib: t.disk_gib,
                })
                .collect(),
        )
    }

    /// Launch an instance. Answers 202 with the instance `pending`; it becomes `running`
    /// (or `error`, with `state_reason`) in the background. 400 for invalid input, 404
    /// for an unknown key pair or image, 409 `ImageUnavailable`, `InsufficientMemory`,
    /// `InsufficientDisk` or `AddressPoolExhausted` when the host cannot take it, 503
    /// `LibvirtUnavailable` or `NetworkUnavailable` (with the fix) until they are back.
    #[oai(path = "/instances", method = "post")]
    async fn launch(&self, app: Data<&Arc<App>>, body: Json<LaunchInstanceRequest>) -> Result<Accepted, ApiError> {
        let b = body.0;
        let instance = app
            .instances
            .launch(LaunchRequest {
                instance_type: b.instance_type.0,
                image: b.image_id.0,
                name: b.name.map(Text::into_string),
                key_name: b.key_name.map(Text::into_string),
                user_data: b.user_data.map(Text::into_string),
            })
            .await?;
        Ok(Accepted::Accepted(Json(instance.into())))
    }

    /// All instances; terminated ones only with `include_terminated=true`.
    #[oai(path = "/instances", method = "get")]
    async fn list(
        &self,
        app: Data<&Arc<App>>,
        include_terminated: Query<Option<bool>>,
    ) -> Result<SerdeJson<Vec<InstanceDto>>, ApiError> {
        let all = app.instances.list(include_terminated.0.unwrap_or(false)).await?;
        Ok(SerdeJson::new(&all.into_iter().map(InstanceDto::from).collect())?)
    }

    /// One instance, with its state and address read from libvirt now.
    #[oai(path = "/instances/:id", method = "get")]
    async fn get(&self, app: Data<&Arc<App>>, id: Path<String>) -> Result<Json<InstanceDto>, ApiError> {
        Ok(Json(app.instances.get(&id.0).await?.into()))
    }

    /// Start a stopped instance; one running or starting already is answered as it is
    /// (as EC2 does). 409 `IncorrectInstanceState` from any other state.
    #[oai(path = "/instances/:id/start", method = "post")]
    async fn start(&self, app: Data<&Arc<App>>, id: Path<String>) -> Result<Accepted, ApiError> {
        Ok(Accepted::Accepted(Json(app.instances.start(&id.0).await?.into())))
    }

    /// Shut a running instance's guest OS down (forced off after the stop timeout); one
    /// stopped or stopping already is answered as it is. 409 `OperationNotPermitted` while
    /// its `disableApiStop` attribute is set (EC2's ModifyInstanceAttribute).
    #[oai(path = "/instances/:id/stop", method = "post")]
    async fn stop(&self, app: Data<&Arc<App>>, id: Path<String>) -> Result<Accepted, ApiError> {
        Ok(Accepted::Accepted(Json(app.instances.stop(&id.0).await?.into())))
    }

    /// Reboot a running instance's guest OS; it keeps its disk, MAC and address.
    #[oai(path = "/instances/:id/reboot", method = "post")]
    async fn reboot(&self, app: Data<&Arc<App>>, id: Path<String>) -> Result<Accepted, ApiError> {
        Ok(Accepted::Accepted(Json(app.instances.reboot(&id.0).await?.into())))
    }

    /// Terminate: stop, delete the disk, seed and domain, release the address. 409
    /// `OperationNotPermitted` while its `disableApiTermination` attribute is set.
    #[oai(path = "/instances/:id", method = "delete")]
    async fn terminate(&self, app: Data<&Arc<App>>, id: Path<String>) -> Result<Accepted, ApiError> {
        Ok(Accepted::Accepted(Json(app.instances.terminate(&id.0).await?.into())))
    }

    /// The guest's serial console output, to see why a guest did not come up.
    #[oai(path = "/instances/:id/console-output", method = "get")]
    async fn console_output(&self, app: Data<&Arc<App>>, id: Path<String>) -> Result<Json<ConsoleOutputDto>, ApiError> {
        let output = app.instances.console_output(&id.0).await?;
        Ok(Json(ConsoleOutputDto { instance_id: id.0, output }))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use poem::IntoResponse;
    use poem_openapi::types::ToJSON;

    use super::*;
    use crate::exec::scripted::Scripted;
    use crate::instances::status_check::{CheckStatus, StatusCheck};
    use crate::instances::testbench::instances_over;

    // issue 16: status checks
    #[tokio::test]
    async fn the_status_check_and_host_keys_are_on_the_instance() {
        let bench = instances_over(Scripted::default(), Duration::from_secs(1)).with_instance("running").await;
        let mut instance = bench.instances.inner().describe(bench.row().await);
        let json = InstanceDto::from(instance.clone()).to_json().unwrap();
        assert_eq!(json["status"], "initializing", "a running instance not probed yet: {json}");
        assert_eq!(json["status_reason"], "waiting for SSH");
        assert_eq!((&json["reachable_at"], &json["host_keys"]), (&serde_json::Value::Null, &serde_json::json!([])));

        instance.status_check = StatusCheck {
            status: CheckStatus::Impaired,
            reason: Some("SSH stopped answering".into()),
            reachable_at: Some("2026-11-26T10:00:40Z".into()),
            impaired_since: Some("2026-11-26T10:05:00Z".into()),
        };
        instance.host_keys =
            vec!["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIC+ysjWWhsXJKDR6WqwtIjO2XSsVZzq/39bXnGsLzHz6".into()];
        let dto = InstanceDto::from(instance);
        assert_eq!((dto.status.as_str(), dto.status_reason.as_deref()), ("impaired", Some("SSH stopped answering")));
        assert_eq!(dto.reachable_at.as_deref(), Some("2026-11-26T10:00:40Z"));
        assert_eq!(dto.host_keys.len(), 1);

        let stopped = instances_over(Scripted::default(), Duration::from_secs(1)).with_instance("stopped").await;
        let dto = InstanceDto::from(stopped.instances.inner().describe(stopped.row().await));
        assert_eq!((dto.status.as_str(), dto.status_reason, dto.reachable_at), ("not-applicable", None, None));
    }

    // issue 17: the list is printed by serde; it is the document poem-openapi's schema
    // describes, field for field, nulls and empty lists included.
    #[tokio::test]
    async fn the_list_printed_by_serde_is_the_documented_object() {
        let bench = instances_over(Scripted::default(), Duration::from_secs(1)).with_instance("running").await;
        let mut full = bench.instances.inner().describe(bench.row().await);
        let sparse = InstanceDto::from(full.clone());
        full.task = Some(crate::instances::state::Task::Stopping);
        (full.state_reason, full.ip_address) = (Some("User initiated".into()), Some("192.168.100.10".into()));
        (full.key_name, full.launched_at) = (Some("k".into()), Some("2026-11-26T10:00:01Z".into()));
        full.terminated_at = Some("2026-11-26T10:05:00Z".into());
        full.status_check.reachable_at = Some("2026-11-26T10:00:40Z".into());
        full.host_keys = vec!["ssh-ed25519 AAAA1".into(), "ecdsa-sha2-nistp256 AAAA2".into()];
        let list = vec![sparse, InstanceDto::from(full)];
        let printed = SerdeJson::new(&list).unwrap().into_response().into_body().into_vec().await.unwrap();
        let printed: serde_json::Value = serde_json::from_slice(&printed).unwrap();
        assert_eq!(printed, list.to_json().unwrap());
        assert_eq!(printed[0]["task"], serde_json::Value::Null, "{printed}");
        assert!(printed[0].as_object().unwrap().contains_key("terminated_at"), "nulls are written out: {printed}");
        assert_eq!(printed[1]["host_keys"][1], "ecdsa-sha2-nistp256 AAAA2");
    }
}
