//! StartInstances, StopInstances, RebootInstances, TerminateInstances and
//! DescribeInstanceStatus. The lifecycle is the instance service's; a batch is checked
//! whole first, so that one refusal changes nothing.

use super::Call;
use super::error::Ec2Error;
use super::instances::{ec2_state, instance_ids, named};
use super::xml::{Xml, timestamp};
use crate::instances::state::{Action, Plan, Status, plan};
use crate::instances::status_check::{CheckStatus, StatusCheck};
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
            x.text("instanceId", &i.id);
            x.text("availabilityZone", &zone);
            x.elem("instanceState", |x| {
                x.int("code", code);
                x.text("name", name);
            });
            write_summary(x, "systemStatus", &i.status_check);
            write_summary(x, "instanceStatus", &i.status_check);
        })
    }))
}

/// An `InstanceStatusSummary` from the status check (issue 16): its status, and the
/// reachability check's detail while there is one.
fn write_summary(x: &mut Xml, tag: &str, check: &StatusCheck) {
    x.elem(tag, |x| {
        x.text("status", check.status.as_str());
        let reachability = match check.status {
            CheckStatus::Ok => "passed",
            CheckStatus::Impaired => "failed",
            CheckStatus::Initializing => "initializing",
            CheckStatus::NotApplicable => return,
        };
        x.set("details", [reachability], |x, status| {
            x.text("name", "reachability");
            x.text("status", status);
            x.opt("impairedSince", check.impaired_since.as_deref().map(timestamp).as_deref());
        });
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(status: CheckStatus, impaired_since: Option<&str>) -> String {
        let check = StatusCheck {
            status,
            reason: None,
            reachable_at: None,
            impaired_since: impaired_since.map(str::to_string),
        };
        let mut x = Xml::document();
        write_summary(&mut x, "instanceStatus", &check);
        x.finish().split_once('\n').unwrap().1.to_string()
    }

    // issue 16: status checks, in botocore's InstanceStatusSummary and InstanceStatusDetails.
    #[test]
    fn summaries_carry_the_status_and_the_reachability_detail() {
        let detail = |status: &str, extra: &str| {
            format!("<details><item><name>reachability</name><status>{status}</status>{extra}</item></details>")
        };
        assert_eq!(
            summary(CheckStatus::Ok, None),
            format!("<instanceStatus><status>ok</status>{}</instanceStatus>", detail("passed", ""))
        );
        assert_eq!(
            summary(CheckStatus::Initializing, None),
            format!("<instanceStatus><status>initializing</status>{}</instanceStatus>", detail("initializing", ""))
        );
        assert_eq!(
            summary(CheckStatus::Impaired, Some("2026-11-26T10:05:00Z")),
            format!(
                "<instanceStatus><status>impaired</status>{}</instanceStatus>",
                detail("failed", "<impairedSince>2026-11-26T10:05:00.000Z</impairedSince>")
            )
        );
        assert_eq!(
            summary(CheckStatus::NotApplicable, None),
            "<instanceStatus><status>not-applicable</status></instanceStatus>"
        );
    }
}
