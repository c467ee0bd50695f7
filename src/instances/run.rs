//! A launch request for one or more instances (EC2's RunInstances; the REST API's
//! launch is the case of one): a reservation groups them, and a client token makes
//! repeating the request answer the first reservation instead of launching again.

use super::tags;
use super::{Instance, Instances, LaunchRequest};
use crate::db::reservations::{self, Claim, ReservationRow};
use crate::db::{instances as rows, timestamp_now};
use crate::error::{AppError, InstanceError};

/// How many instances one request may launch.
pub const MAX_COUNT: u32 = 20;

#[derive(Debug, Clone)]
pub struct RunRequest {
    pub launch: LaunchRequest,
    /// Tags for every instance; `Name` is their name.
    pub tags: Vec<(String, String)>,
    /// Launch `max_count` if the host can take them, refuse below `min_count`.
    pub min_count: u32,
    pub max_count: u32,
    pub client_token: Option<String>,
    /// The request's parameters, as the front end sees them: a token reused with a
    /// different digest is refused.
    pub digest: String,
    pub disable_api_termination: bool,
    pub disable_api_stop: bool,
}

impl RunRequest {
    pub fn one(launch: LaunchRequest) -> Self {
        RunRequest {
            launch,
            tags: Vec::new(),
            min_count: 1,
            max_count: 1,
            client_token: None,
            digest: String::new(),
            disable_api_termination: false,
            disable_api_stop: false,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Reservation {
    pub id: String,
    pub client_token: Option<String>,
    pub instances: Vec<Instance>,
}

impl Instances {
    /// Launches between `min_count` and `max_count` instances of one request. Below
    /// `min_count` the ones made are terminated and the host's reason is the error.
    pub async fn run(&self, run: RunRequest) -> Result<Reservation, AppError> {
        if run.min_count < 1 || run.max_count < run.min_count || run.max_count > MAX_COUNT {
            return Err(InstanceError::InvalidCount(format!(
                "MinCount ({}) and MaxCount ({}) must be 1 <= MinCount <= MaxCount <= {MAX_COUNT}",
                run.min_count, run.max_count
            ))
            .into());
        }
        // A retry is answered before anything else is checked: what made the first call
        // succeed (a free host, the key pair, the image) may be gone by now.
        if let Some(token) = run.client_token.clone() {
            let earlier = self.inner().deps.db.call(move |c| reservations::by_token(c, &token)).await?;
            if let Some(earlier) = earlier {
                return self.answer_again(earlier, &run).await;
            }
        }
        tags::validate(&run.tags)?;
        let (name, other_tags) = tags::split_name(&run.tags);
        let mut launch = run.launch.clone();
        if let Some(name) = name {
            launch.name = Some(name);
        }
        let inner = self.inner();
        let instance_type = super::create::validate(&launch)?;
        let public_key = match &launch.key_name {
            Some(key_name) => Some(inner.deps.key_pairs.get(key_name).await?.public_key),
            None => None,
        };
        let image = inner.deps.images.resolve_for_launch(&launch.image).await?;
        let steps = super::create::LaunchSteps::start();
        let mut available_memory_mib = steps.time("", "host_check", self.check_host(&instance_type)).await?;

        let reservation_id = crate::ids::long_id("r");
        if let Some(earlier) = self.claim_reservation(&reservation_id, &run).await? {
            return Ok(earlier);
        }

        let mut instances = Vec::new();
        let mut refusal = None;
        for n in 0..run.max_count {
            if n > 0 {
                // libvirt, the network and the ISO tool were checked for the first; each
                // further instance needs only room (memory is checked as it is recorded).
                match self.check_capacity(instance_type.disk_gib).await {
                    Ok(memory) => available_memory_mib = memory,
                    Err(e) => {
                        refusal = Some(e);
                        break;
                    }
                }
            }
            let mut row = super::create::new_row(launch.clone(), &instance_type, &image, public_key.clone());
            row.reservation_id = Some(reservation_id.clone());
            row.disable_api_termination = run.disable_api_termination;
            row.disable_api_stop = run.disable_api_stop;
            let steps = steps.fork();
            match steps.time("", "record", self.record(row, available_memory_mib, other_tags.clone())).await {
                Ok((row, ownership, from_spare)) => {
                    tracing::info!(instance = %row.id, reservation = %reservation_id, instance_type = %row.instance_type, image = %row.image_name, warm_spare = from_spare, "launch accepted");
                    instances.push(self.inner().describe(row.clone()));
                    self.build_in_background(row, image.clone(), ownership, from_spare, steps);
                }
                Err(e) => {
                    refusal = Some(e);
                    break;
                }
            }
        }
        if (instances.len() as u32) < run.min_count {
            self.undo_run(&reservation_id, &instances).await;
            return Err(refusal.unwrap_or_else(|| AppError::internal("no instance was launched")));
        }
        if let Some(e) = refusal {
            tracing::info!(reservation = %reservation_id, launched = instances.len(), wanted = run.max_count, reason = %e, "launched fewer than asked");
        }
        Ok(Reservation { id: reservation_id, client_token: run.client_token, instances })
    }

    /// Records the reservation; None when it is new. A client token used before answers
    /// with its reservation, or is refused when the request differs.
    async fn claim_reservation(&self, id: &str, run: &RunRequest) -> Result<Option<Reservation>, AppError> {
        let claim = ReservationRow {
            id: id.to_string(),
            client_token: run.client_token.clone(),
            request_digest: run.digest.clone(),
            created_at: timestamp_now(),
        };
        let db = &self.inner().deps.db;
        match db.call(move |c| reservations::claim(c, &claim)).await? {
            Claim::New => Ok(None),
            Claim::Taken(existing) => self.answer_again(existing, run).await.map(Some),
        }
    }

    /// The reservation a client token made, for a request with the same parameters.
    async fn answer_again(&self, earlier: ReservationRow, run: &RunRequest) -> Result<Reservation, AppError> {
        if earlier.request_digest != run.digest {
            return Err(InstanceError::IdempotentParameterMismatch(format!(
                "client token {:?} was used with other parameters",
                run.client_token.clone().unwrap_or_default()
            ))
            .into());
        }
        let id = earlier.id.clone();
        let rows = self.inner().deps.db.call(move |c| rows::in_reservation(c, &id)).await?;
        let instances = rows.into_iter().map(|row| self.inner().describe(row)).collect();
        Ok(Reservation { id: earlier.id, client_token: earlier.client_token, instances })
    }

    /// Takes back a run that made fewer instances than its minimum.
    async fn undo_run(&self, reservation_id: &str, instances: &[Instance]) {
        for instance in instances {
            let undone = async {
                self.set_protection(&instance.id, Some(false), Some(false)).await?;
                self.terminate(&instance.id).await
            };
            if let Err(e) = undone.await {
                tracing::error!(instance = %instance.id, error = %e, "could not take back an instance of a refused run");
            }
        }
        let id = reservation_id.to_string();
        if let Err(e) = self.inner().deps.db.call(move |c| reservations::give_up(c, &id)).await {
            tracing::error!(reservation = %reservation_id, error = %e, "could not free the refused run's client token");
        }
    }
}
