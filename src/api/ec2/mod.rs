//! The AWS EC2 Query API (version 2016-11-15) on the service's own port: `POST /` with
//! a form, or `GET /?Action=…`. The aws CLI, boto3 and Terraform drive the same
//! instances, key pairs and images as the REST API; handlers parse, call the services
//! and write EC2's XML. Signatures are accepted and never checked: the service listens
//! on loopback only.

mod attributes;
pub mod error;
pub mod form;
mod images;
mod instances;
mod keys;
mod lifecycle;
mod regions;
mod tags;
pub mod xml;

use std::sync::Arc;

use poem::web::Data;
use poem::{Body, Request, Response, handler};

use crate::app::App;
use error::{Ec2Error, ok_response};
use form::Params;

/// What every instance and reservation says it belongs to: one local account.
pub const OWNER_ID: &str = "000000000000";
pub const DEFAULT_REGION: &str = "us-east-1";

/// An architecture as EC2 names it (`arm64`, not libvirt's `aarch64`).
pub fn ec2_arch(libvirt_name: &str) -> &str {
    match libvirt_name {
        "aarch64" => "arm64",
        other => other,
    }
}

/// One EC2 call: its parameters, the caller's region and the id of this request.
pub struct Call<'a> {
    pub app: &'a App,
    pub params: Params,
    pub region: String,
    pub request_id: String,
    pub action: String,
}

impl Call<'_> {
    /// With `DryRun=true`, the answer a call that would succeed gets instead of running.
    pub fn stop_if_dry_run(&self) -> Result<(), Ec2Error> {
        match self.params.bool("DryRun")? {
            Some(true) => Err(Ec2Error::dry_run()),
            _ => Ok(()),
        }
    }

    /// A response to this call: `<{Action}Response>` with its request id.
    pub fn respond(&self, body: impl FnOnce(&mut xml::Xml)) -> String {
        xml::Xml::response(&self.action, &self.request_id, body)
    }

    /// The caller's availability zone: its region and `a`.
    pub fn zone(&self) -> String {
        format!("{}a", self.region)
    }
}

/// `GET /`: EC2 when the query names an action, else the web UI.
#[handler]
pub async fn get_root(req: &Request, app: Data<&Arc<App>>) -> Response {
    let params = Params::parse(req.uri().query().unwrap_or_default().as_bytes());
    if params.get("Action").is_none() {
        return super::ui::index_page();
    }
    answer(&app, params, req).await
}

/// `POST /`: the form-encoded calls the SDKs send.
#[handler]
pub async fn post_root(req: &Request, body: Body, app: Data<&Arc<App>>) -> Response {
    let mut params = Params::parse(req.uri().query().unwrap_or_default().as_bytes());
    match body.into_bytes().await {
        Ok(bytes) => params.extend(Params::parse(&bytes)),
        Err(e) => return Ec2Error::client("MalformedQueryString", e.to_string()).response(&request_id()),
    }
    answer(&app, params, req).await
}

async fn answer(app: &App, params: Params, req: &Request) -> Response {
    let request_id = request_id();
    let Some(action) = params.get("Action").map(str::to_string) else {
        return Ec2Error::client("MissingAction", "The request must contain the parameter Action")
            .response(&request_id);
    };
    let region = region_of(req).unwrap_or_else(|| DEFAULT_REGION.to_string());
    let call = Call { app, params, region, request_id: request_id.clone(), action };
    let started = std::time::Instant::now();
    let result = dispatch(&call).await;
    let millis = started.elapsed().as_millis() as u64;
    match result {
        Ok(body) => {
            tracing::info!(action = %call.action, request = %request_id, millis, "EC2 call");
            ok_response(body)
        }
        Err(e) => {
            tracing::info!(action = %call.action, request = %request_id, millis, code = %e.code, "EC2 call refused");
            e.response(&request_id)
        }
    }
}

async fn dispatch(call: &Call<'_>) -> Result<String, Ec2Error> {
    match call.action.as_str() {
        "RunInstances" => instances::run_instances(call).await,
        "DescribeInstances" => instances::describe_instances(call).await,
        "StartInstances" => lifecycle::start_instances(call).await,
        "StopInstances" => lifecycle::stop_instances(call).await,
        "RebootInstances" => lifecycle::reboot_instances(call).await,
        "TerminateInstances" => lifecycle::terminate_instances(call).await,
        "DescribeInstanceStatus" => lifecycle::describe_instance_status(call).await,
        "DescribeInstanceAttribute" => attributes::describe_instance_attribute(call).await,
        "ModifyInstanceAttribute" => attributes::modify_instance_attribute(call).await,
        "DescribeInstanceCreditSpecifications" => attributes::describe_credit_specifications(call).await,
        "DescribeInstanceTypes" => attributes::describe_instance_types(call).await,
        "GetConsoleOutput" => attributes::get_console_output(call).await,
        "ImportKeyPair" => keys::import_key_pair(call).await,
        "CreateKeyPair" => keys::create_key_pair(call).await,
        "DescribeKeyPairs" => keys::describe_key_pairs(call).await,
        "DeleteKeyPair" => keys::delete_key_pair(call).await,
        "DescribeImages" => images::describe_images(call).await,
        "DescribeRegions" => regions::describe_regions(call).await,
        "DescribeAvailabilityZones" => regions::describe_availability_zones(call).await,
        "CreateTags" => tags::create_tags(call).await,
        "DeleteTags" => tags::delete_tags(call).await,
        "DescribeTags" => tags::describe_tags(call).await,
        other => {
            Err(Ec2Error::client("InvalidAction", format!("The action {other} is not valid for this web service.")))
        }
    }
}

/// The actions answered, for the README and the tests.
pub const ACTIONS: [&str; 22] = [
    "RunInstances",
    "DescribeInstances",
    "StartInstances",
    "StopInstances",
    "RebootInstances",
    "TerminateInstances",
    "DescribeInstanceStatus",
    "DescribeInstanceAttribute",
    "ModifyInstanceAttribute",
    "DescribeInstanceCreditSpecifications",
    "DescribeInstanceTypes",
    "GetConsoleOutput",
    "ImportKeyPair",
    "CreateKeyPair",
    "DescribeKeyPairs",
    "DeleteKeyPair",
    "DescribeImages",
    "DescribeRegions",
    "DescribeAvailabilityZones",
    "CreateTags",
    "DeleteTags",
    "DescribeTags",
];

fn request_id() -> String {
    let hex = crate::ids::random_hex(16);
    format!("{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..])
}

/// The region of the SigV4 credential scope (`Credential=AKID/DATE/REGION/ec2/aws4_request`),
/// from the Authorization header or a presigned query.
fn region_of(req: &Request) -> Option<String> {
    let from_scope = |scope: &str| scope.split('/').nth(2).filter(|r| !r.is_empty()).map(str::to_string);
    let header = req.headers().get("authorization").and_then(|v| v.to_str().ok());
    if let Some(credential) = header.and_then(|h| h.split("Credential=").nth(1)) {
        return from_scope(credential.split([',', ' ']).next().unwrap_or_default());
    }
    let query = Params::parse(req.uri().query().unwrap_or_default().as_bytes());
    query.get("X-Amz-Credential").and_then(from_scope)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_region_comes_from_the_credential_scope() {
        let req = Request::builder()
            .header(
                "authorization",
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261126/eu-west-3/ec2/aws4_request, SignedHeaders=host, Signature=x",
            )
            .finish();
        assert_eq!(region_of(&req).as_deref(), Some("eu-west-3"));
        let req = Request::builder()
            .uri_str("/?Action=DescribeRegions&X-Amz-Credential=AKID%2F20261126%2Fap-south-1%2Fec2%2Faws4_request")
            .finish();
        assert_eq!(region_of(&req).as_deref(), Some("ap-south-1"));
        assert_eq!(region_of(&Request::builder().finish()), None);
    }

    #[test]
    fn request_ids_look_like_uuids() {
        let id = request_id();
        assert_eq!(id.len(), 36);
        assert_eq!(id.matches('-').count(), 4);
    }
}
