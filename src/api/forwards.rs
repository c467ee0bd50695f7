//! /api/instances/{id}/forwards and /api/forwards: port forwarding (issue 16).

use std::sync::Arc;

use poem::web::Data;
use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi};

use super::ApiTags;
use super::error::ApiError;
use super::strict::{Integer, field};
use crate::app::App;
use crate::forwards::{Forward, NewForward};

pub struct ForwardsApi;

#[derive(Debug, Object)]
#[oai(deny_unknown_fields)]
pub struct CreateForwardRequest {
    /// The port to listen on, 1-65535 (below 1024 only when the service runs as root).
    /// Leave it out for a free port picked by the system.
    pub host_port: Option<Integer<field::HostPort>>,
    /// The instance's port connections go to, 1-65535.
    pub instance_port: Integer<field::InstancePort>,
}

#[derive(Debug, Object)]
pub struct ForwardDto {
    pub instance_id: String,
    /// Connect to `bind_address:host_port` to reach `instance_port` of the instance.
    pub host_port: u16,
    pub instance_port: u16,
    /// 127.0.0.1 unless the service was started with `--forward-bind`.
    pub bind_address: String,
    /// `active`: connections are relayed. `paused`: they are closed at once, because the
    /// instance is not running, has no address yet, or the host port is not bound.
    pub state: String,
    /// Why the forward is paused.
    pub state_reason: Option<String>,
    pub created_at: String,
    /// Connections relayed now.
    pub connections: u64,
}

impl From<Forward> for ForwardDto {
    fn from(f: Forward) -> Self {
        ForwardDto {
            instance_id: f.instance_id,
            host_port: f.host_port,
            instance_port: f.instance_port,
            bind_address: f.bind_address.to_string(),
            state: f.state.as_str().into(),
            state_reason: f.state_reason,
            created_at: f.created_at,
            connections: f.connections as u64,
        }
    }
}

#[derive(ApiResponse)]
pub enum CreatedForward {
    /// The port listens now; connections are relayed while the instance runs.
    #[oai(status = 201)]
    Created(Json<ForwardDto>),
}

#[derive(ApiResponse)]
pub enum RemovedForward {
    /// The port is closed, and the connections it relayed with it.
    #[oai(status = 204)]
    NoContent,
}

#[OpenApi(tag = "ApiTags::Forwards")]
impl ForwardsApi {
    /// Forward a host port to a port of the instance. 400 for a port outside 1-65535,
    /// 404 for an unknown instance, 409 `PortInUse` when another forward or process holds
    /// the host port, `PortNotPermitted` below 1024 without root, and
    /// `IncorrectInstanceState` for a terminated instance.
    #[oai(path = "/instances/:id/forwards", method = "post")]
    async fn create(
        &self,
        app: Data<&Arc<App>>,
        id: Path<String>,
        body: Json<CreateForwardRequest>,
    ) -> Result<CreatedForward, ApiError> {
        let body = body.0;
        let request = NewForward { host_port: body.host_port.map(|p| p.0), instance_port: body.instance_port.0 };
        Ok(CreatedForward::Created(Json(app.forwards.create(&id.0, request).await?.into())))
    }

    /// The instance's forwards, by host port.
    #[oai(path = "/instances/:id/forwards", method = "get")]
    async fn list(&self, app: Data<&Arc<App>>, id: Path<String>) -> Result<Json<Vec<ForwardDto>>, ApiError> {
        Ok(Json(app.forwards.list(Some(&id.0)).await?.into_iter().map(ForwardDto::from).collect()))
    }

    /// End a forward. 404 `ForwardNotFound` when the instance has none on that port.
    #[oai(path = "/instances/:id/forwards/:host_port", method = "delete")]
    async fn remove(
        &self,
        app: Data<&Arc<App>>,
        id: Path<String>,
        host_port: Path<i64>,
    ) -> Result<RemovedForward, ApiError> {
        app.forwards.remove(&id.0, host_port.0).await?;
        Ok(RemovedForward::NoContent)
    }

    /// Every forward of every instance, by host port.
    #[oai(path = "/forwards", method = "get")]
    async fn list_all(&self, app: Data<&Arc<App>>) -> Result<Json<Vec<ForwardDto>>, ApiError> {
        Ok(Json(app.forwards.list(None).await?.into_iter().map(ForwardDto::from).collect()))
    }
}
