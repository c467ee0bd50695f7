//! StartInstances, StopInstances, RebootInstances, TerminateInstances and
//! DescribeInstanceStatus. The lifecycle is the instance service's; a batch is checked
//! whole first, so that one refusal changes nothing.

use super::Call;
use super::error::Ec2Error;
use super::instances::{ec2_state, instance_ids, named};
use super::xml::Xml;
use crate::instances::state::{Action, Plan, Status, plan};
use crate::instances::{Instance, StopMode};

/// Start, stop, reboot or terminate a batch: all checked first (ids, state, protection),
/// so that one refusal changes nothing.
async fn lifecycle_batch(call: &Call<'_>, action: Action) -> Result<Vec<(Instance, Instance)>, Ec2Error> {
    let named = named(call).await?;
    for i in &named {
        let status = Status { state: i.state, task: i.task };
        if let Err(e) = plan(action, status) {
            return Err(Ec2Error::client(
                "IncorrectInstanceState",
                format!("The instance '{}' is not in a state from which it can be {}: {e}", i.id, action.past_tense()),
            ));
        }
        if plan(action, status) != Ok(Plan::AlreadyDone) {
            let protected = match action {
                Action::Terminate => i.disable_api_termination,
                Action::Stop => i.disable_api_stop,
                _ => false,
            };
            if protected {
                return Err(Ec2Error::client(
                    "OperationNotPermitted",
                    format!(
                        "The instance '{}' may not be {}. Modify its '{}' instance attribute and try again.",
                        i.id,
                        action.past_tense(),
                        if action == Action::Terminate { "disableApiTermination" } else { "disableApiStop" }
                    ),
                ));
            }
        }
    }
    call.stop_if_dry_run()?;
    let force = call.params.bool("Force")?.unwrap_or(false);
    let mut changes = Vec::new();
    for before in named {
        let instances = &call.app.instances;
        let after = match action {
            Action::Start => instances.start(&before.id).await?,
            Action::Stop => {
                instances.stop_with(&before.id, if force { StopMode::PowerOff } else { StopMode::Graceful }).await?
            }
            Action::Reboot => instances.reboot(&before.id).await?,
            Action::Terminate => instances.terminate(&before.id).await?,
        };
        changes.push((before, after));
    }
    Ok(changes)
}

fn state_changes(call: &Call<'_>, changes: &[(Instance, Instance)]) -> String {
    call.respond(|x| {
        x.set("instancesSet", changes, |x, (before, after)| {
            let (current, previous) = (ec2_state(after), ec2_state(before));
            x.text("instanceId", &after.id);
            x.elem("currentState", |x| {
                x.int("code", current.0);
                x.text("name", current.1);
            });
            x.elem("previousState", |x| {
                x.int("code", previous.0);
                x.text("name", previous.1);
            });
        })
    })
}

pub async fn start_instances(call: &Call<'_>) -> Result<String, Ec2Error> {
    let changes = lifecycle_batch(call, Action::Start).await?;
    Ok(state_changes(call, &changes))
}

pub async fn stop_instances(call: &Call<'_>) -> Result<String, Ec2Error> {
    if call.params.bool("Hibernate")? == Some(true) {
        return Err(Ec2Error::unsupported("Hibernation is not supported: ec2local instances stop and start."));
    }
    let changes = lifecycle_batch(call, Action::Stop).await?;
    Ok(state_changes(call, &changes))
}

pub async fn terminate_instances(call: &Call<'_>) -> Result<String, Ec2Error> {
    let changes = lifecycle_batch(call, Action::Terminate).await?;
    Ok(state_changes(call, &changes))
}

pub async fn reboot_instances(call: &Call<'_>) -> Result<String, Ec2Error> {
    lifecycle_batch(call, Action::Reboot).await?;
    Ok(call.respond(|x| x.bool("return", true)))
}

pub async fn describe_instance_status(call: &Call<'_>) -> Result<String, Ec2Error> {
    let all = call.params.bool("IncludeAllInstances")?.unwrap_or(false);
    let instances = if instance_ids(&call.params)?.is_empty() {
        call.app.instances.list(false).await?
    } else {
        named(call).await?
    };
    call.stop_if_dry_run()?;
    let shown: Vec<&Instance> = instances.iter().filter(|i| all || ec2_state(i).1 == "running").collect();
    let zone = call.zone();
    Ok(call.respond(|x| {
        x.set("instanceStatusSet", shown, |x, i| {
            let (code, name) = ec2_state(i);
            let summary = match name {
                "running" => "ok",
                "pending" => "initializing",
                _ => "not-applicable",
            };
            let check = |x: &mut Xml, tag: &str| {
                x.elem(tag, |x| {
                    x.text("status", summary);
                    if summary != "not-applicable" {
                        let passed = if summary == "ok" { "passed" } else { "initializing" };
                        x.set("details", [passed], |x, status| {
                            x.text("name", "reachability");
                            x.text("status", status);
                        });
                    }
                })
            };
            x.text("instanceId", &i.id);
            x.text("availabilityZone", &zone);
            x.elem("instanceState", |x| {
                x.int("code", code);
                x.text("name", name);
            });
            check(x, "systemStatus");
            check(x, "instanceStatus");
        })
    }))
}
