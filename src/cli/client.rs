//! The CLI's side of the REST API: one client per command, the answers it reads, and
//! the errors a person sees. Only the fields the CLI uses are read, so a newer service
//! with more fields still works.

use serde::Deserialize;
use serde::de::DeserializeOwned;

/// What ends a CLI command, each with the message a person reads; all exit with 1.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(
        "could not reach {endpoint} ({detail}): is `ec2local serve` running? (--endpoint or EC2LOCAL_ENDPOINT to use another address)"
    )]
    Unreachable { endpoint: String, detail: String },
    /// The service refused: its own message, which says why and what to do.
    #[error("{message} ({code})")]
    Refused { status: u16, code: String, message: String },
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Local(String),
}

impl CliError {
    pub fn local(what: impl std::fmt::Display, err: impl std::fmt::Display) -> CliError {
        CliError::Local(format!("{what}: {err}"))
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct InstanceView {
    pub id: String,
    pub name: String,
    pub instance_type: String,
    pub state: String,
    #[serde(default)]
    pub task: Option<String>,
    #[serde(default)]
    pub state_reason: Option<String>,
    #[serde(default)]
    pub ip_address: Option<String>,
    #[serde(default)]
    pub key_name: Option<String>,
    pub image_name: String,
    pub login_user: String,
    pub created_at: String,
    /// initializing, ok, impaired or not-applicable (older services: absent).
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub status_reason: Option<String>,
    #[serde(default)]
    pub host_keys: Vec<String>,
}

impl InstanceView {
    /// Running, idle and answering SSH: what a person waits for before logging in.
    pub fn is_ready(&self) -> bool {
        self.state == "running" && self.task.is_none() && self.status.as_deref() == Some("ok")
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct KeyPairView {
    pub name: String,
    pub key_type: String,
    pub fingerprint_sha256: String,
    pub created_at: String,
    #[serde(default)]
    pub has_private_key: bool,
    #[serde(default)]
    pub private_key: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct PullView {
    pub state: String,
    pub bytes_done: u64,
    #[serde(default)]
    pub bytes_total: Option<u64>,
    #[serde(default)]
    pub bytes_per_second: f64,
    #[serde(default)]
    pub eta_seconds: Option<f64>,
    #[serde(default)]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ImageView {
    pub id: String,
    pub name: String,
    pub architecture: String,
    pub available: bool,
    /// available, not-downloaded, downloading, pull-failed, missing-file, other-architecture.
    #[serde(default)]
    pub availability: Option<String>,
    #[serde(default)]
    pub unavailable_reason: Option<String>,
    #[serde(default)]
    pub pull: Option<PullView>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ForwardView {
    pub instance_id: String,
    pub host_port: u16,
    pub instance_port: u16,
    pub bind_address: String,
    pub state: String,
    #[serde(default)]
    pub state_reason: Option<String>,
    #[serde(default)]
    pub connections: u64,
}

/// The service's error body.
#[derive(Debug, Deserialize)]
struct ErrorBody {
    code: String,
    message: String,
}

pub struct Client {
    base: reqwest::Url,
    http: reqwest::Client,
}

impl Client {
    pub fn new(endpoint: &str) -> Result<Client, CliError> {
        let base = reqwest::Url::parse(endpoint)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https"))
            .ok_or_else(|| CliError::Usage(format!("--endpoint {endpoint:?} is not an http:// address")))?;
        // TLS uses ring, like the rest of the crypto here; installing twice is harmless.
        let _ = rustls::crypto::ring::default_provider().install_default();
        Ok(Client { base, http: reqwest::Client::new() })
    }

    pub fn endpoint(&self) -> &reqwest::Url {
        &self.base
    }

    /// `endpoint` + the path segments, each escaped.
    pub fn url(&self, segments: &[&str]) -> reqwest::Url {
        let mut url = self.base.clone();
        url.path_segments_mut().expect("an http URL").pop_if_empty().extend(segments);
        url
    }

    pub async fn get<T: DeserializeOwned>(&self, segments: &[&str]) -> Result<T, CliError> {
        self.send(self.http.get(self.url(segments))).await
    }

    pub async fn get_query<T: DeserializeOwned>(
        &self,
        segments: &[&str],
        query: &[(&str, &str)],
    ) -> Result<T, CliError> {
        let mut url = self.url(segments);
        url.query_pairs_mut().extend_pairs(query);
        self.send(self.http.get(url)).await
    }

    pub async fn post<T: DeserializeOwned>(&self, segments: &[&str], body: &serde_json::Value) -> Result<T, CliError> {
        self.send(self.http.post(self.url(segments)).json(body)).await
    }

    pub async fn delete(&self, segments: &[&str]) -> Result<(), CliError> {
        let response = self.http.delete(self.url(segments)).send().await.map_err(|e| self.unreachable(e))?;
        Self::refusal(response).await.map(drop)
    }

    pub fn unreachable(&self, err: reqwest::Error) -> CliError {
        let mut detail = err.to_string();
        let mut source = std::error::Error::source(&err);
        while let Some(inner) = source {
            detail = inner.to_string();
            source = inner.source();
        }
        CliError::Unreachable { endpoint: self.base.to_string(), detail }
    }

    async fn send<T: DeserializeOwned>(&self, request: reqwest::RequestBuilder) -> Result<T, CliError> {
        let response = request.send().await.map_err(|e| self.unreachable(e))?;
        let response = Self::refusal(response).await?;
        let status = response.status();
        response
            .json()
            .await
            .map_err(|e| CliError::Local(format!("unexpected answer from the service ({status}): {e}")))
    }

    /// The response if it is a success, else the service's own error message.
    pub async fn refusal(response: reqwest::Response) -> Result<reqwest::Response, CliError> {
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let text = response.text().await.unwrap_or_default();
        Err(match serde_json::from_str::<ErrorBody>(&text) {
            Ok(body) => CliError::Refused { status: status.as_u16(), code: body.code, message: body.message },
            Err(_) => CliError::Refused {
                status: status.as_u16(),
                code: status.canonical_reason().unwrap_or("Error").replace(' ', ""),
                message: format!("the service answered {status}: {}", text.trim()),
            },
        })
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// An instance by id (`i-…`) or by name. Live instances come before terminated ones
    /// with the same name; two live instances with one name is an error naming both.
    pub async fn instance(&self, id_or_name: &str) -> Result<InstanceView, CliError> {
        if id_or_name.parse::<crate::ids::InstanceId>().is_ok() {
            match self.get(&["api", "instances", id_or_name]).await {
                // An instance may also be named like an id.
                Err(CliError::Refused { status: 404, .. }) => {}
                other => return other,
            }
        }
        let all: Vec<InstanceView> = self.get_query(&["api", "instances"], &[("include_terminated", "true")]).await?;
        pick_by_name(all, id_or_name)
    }
}

fn no_such_instance(id_or_name: &str) -> CliError {
    CliError::Usage(format!("no instance is called {id_or_name:?} (ec2local ls --all lists them)"))
}

/// The one instance named `name`, preferring live ones over terminated ones.
pub fn pick_by_name(all: Vec<InstanceView>, name: &str) -> Result<InstanceView, CliError> {
    let named: Vec<InstanceView> = all.into_iter().filter(|i| i.name == name).collect();
    let live: Vec<&InstanceView> = named.iter().filter(|i| i.state != "terminated").collect();
    match (live.as_slice(), named.as_slice()) {
        ([one], _) => Ok((*one).clone()),
        ([], [.., last]) => Ok(last.clone()),
        ([], []) => Err(no_such_instance(name)),
        (many, _) => {
            let ids: Vec<&str> = many.iter().map(|i| i.id.as_str()).collect();
            Err(CliError::Usage(format!("{} instances are called {name:?}: {}; use an id", ids.len(), ids.join(", "))))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(id: &str, name: &str, state: &str) -> InstanceView {
        serde_json::from_value(serde_json::json!({
            "id": id, "name": name, "instance_type": "t2.micro", "state": state,
            "image_name": "debian-12", "login_user": "debian", "created_at": "2026-11-26T10:00:00Z"
        }))
        .unwrap()
    }

    #[test]
    fn a_name_picks_the_live_instance_and_refuses_ambiguity() {
        let all = || {
            vec![
                named("i-00000001", "web", "terminated"),
                named("i-00000002", "web", "running"),
                named("i-00000003", "db", "stopped"),
                named("i-00000004", "db", "running"),
                named("i-00000005", "old", "terminated"),
            ]
        };
        assert_eq!(pick_by_name(all(), "web").unwrap().id, "i-00000002");
        assert_eq!(pick_by_name(all(), "old").unwrap().id, "i-00000005");
        let Err(CliError::Usage(ambiguous)) = pick_by_name(all(), "db") else { panic!("two live instances named db") };
        assert!(ambiguous.contains("i-00000003, i-00000004") && ambiguous.contains("use an id"), "{ambiguous}");
        let Err(CliError::Usage(unknown)) = pick_by_name(all(), "nope") else { panic!() };
        assert!(unknown.contains("no instance is called \"nope\""), "{unknown}");
    }

    #[test]
    fn an_answer_without_the_newer_fields_still_reads() {
        let old = named("i-00000001", "web", "running");
        assert_eq!((old.status.as_deref(), old.host_keys.len()), (None, 0));
        assert!(!old.is_ready());
    }
}
