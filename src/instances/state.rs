//! The lifecycle (REQ-INST-008) as one typed state machine.
//!
//! An instance has a `State` (what the API shows, the seed's names) and, while the
//! service is working on it, a `Task` (what it is doing: launching is not starting).
//! Every stored change goes through `Status::after`, and the database applies it as a
//! compare-and-set on the pair, so a change computed from a stale view never lands.

use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    Pending,
    Running,
    Stopping,
    Stopped,
    Error,
    Terminated,
}

pub const ALL_STATES: [State; 6] =
    [State::Pending, State::Running, State::Stopping, State::Stopped, State::Error, State::Terminated];

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Running => "running",
            State::Stopping => "stopping",
            State::Stopped => "stopped",
            State::Error => "error",
            State::Terminated => "terminated",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for State {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ALL_STATES.iter().copied().find(|st| st.as_str() == s).ok_or_else(|| format!("unknown state {s:?}"))
    }
}

/// What the service is doing to an instance. Stored with the state so that a restart
/// knows which work was cut short (Nova's `task_state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Task {
    /// Building disk, seed, reservation and domain for the first boot.
    Launching,
    /// Starting a stopped instance: its disk holds the user's data.
    Starting,
    Stopping,
    Rebooting,
    Terminating,
    /// A failed launch whose cleanup could not finish (libvirt was down); retried when
    /// libvirt is back.
    CleaningUp,
}

pub const ALL_TASKS: [Task; 6] =
    [Task::Launching, Task::Starting, Task::Stopping, Task::Rebooting, Task::Terminating, Task::CleaningUp];

impl Task {
    pub fn as_str(self) -> &'static str {
        match self {
            Task::Launching => "launching",
            Task::Starting => "starting",
            Task::Stopping => "stopping",
            Task::Rebooting => "rebooting",
            Task::Terminating => "terminating",
            Task::CleaningUp => "cleaning-up",
        }
    }
}

impl fmt::Display for Task {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Task {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ALL_TASKS.iter().copied().find(|t| t.as_str() == s).ok_or_else(|| format!("unknown task {s:?}"))
    }
}

/// Where an instance is and what is being done to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Status {
    pub state: State,
    pub task: Option<Task>,
}

impl Status {
    pub const fn idle(state: State) -> Status {
        Status { state, task: None }
    }
    pub const fn busy(state: State, task: Task) -> Status {
        Status { state, task: Some(task) }
    }
    /// A new instance, recorded when its launch is accepted.
    pub const LAUNCHING: Status = Status::busy(State::Pending, Task::Launching);
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.task {
            Some(task) => write!(f, "{} ({task})", self.state),
            None => write!(f, "{}", self.state),
        }
    }
}

/// Everything that moves an instance. Users' actions begin a task; the task's own
/// end, the monitor and the recovery after a restart settle it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    Begin(Action),
    /// The task finished as asked.
    Finished,
    /// The task could not finish; the instance is left as libvirt last showed it.
    Settled(State),
    /// A failed launch's cleanup could not finish and will be retried.
    CleanupPending,
    /// The monitor saw libvirt disagree with an idle instance.
    Observed(State),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Start,
    Stop,
    Reboot,
    Terminate,
}

impl Action {
    /// "started", "stopped", …: for messages.
    pub fn past_tense(self) -> &'static str {
        match self {
            Action::Start => "started",
            Action::Stop => "stopped",
            Action::Reboot => "rebooted",
            Action::Terminate => "terminated",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Start => "start",
            Action::Stop => "stop",
            Action::Reboot => "reboot",
            Action::Terminate => "terminate",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot {} an instance that is {}{}", action.as_str(), from.state, hint(*action, *from))]
pub struct IncorrectState {
    pub action: Action,
    pub from: Status,
}

/// A move the lifecycle does not have: a bug in the caller, or a view gone stale.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("an instance that is {from} cannot take {event:?}")]
pub struct IllegalTransition {
    pub from: Status,
    pub event: Event,
}

fn hint(action: Action, from: Status) -> &'static str {
    match (action, from.state, from.task) {
        (_, _, Some(Task::Terminating)) => ": it is being terminated",
        (_, State::Pending, _) => ": wait until it is running",
        (_, State::Stopping, _) => ": wait until it is stopped",
        (_, State::Running, Some(Task::Rebooting)) => ": it is rebooting",
        (_, State::Terminated, _) => ": it is terminated",
        (Action::Start | Action::Stop | Action::Reboot, State::Error, _) => ": terminate it and launch a new one",
        _ => "",
    }
}

/// What an action does from a status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// Move to this status and carry the action out.
    Proceed(Status),
    /// Nothing to do (terminating a terminated instance).
    AlreadyDone,
}

/// Checks a user's action against the current status.
pub fn plan(action: Action, from: Status) -> Result<Plan, IncorrectState> {
    // As EC2: asking for the state an instance is in, or on its way to, is no error.
    let already = match action {
        Action::Terminate => from.state == State::Terminated || from.task == Some(Task::Terminating),
        Action::Start => {
            from == Status::idle(State::Running)
                || matches!(from.task, Some(Task::Starting | Task::Launching | Task::Rebooting))
        }
        Action::Stop => from == Status::idle(State::Stopped) || from.task == Some(Task::Stopping),
        Action::Reboot => false,
    };
    if already {
        return Ok(Plan::AlreadyDone);
    }
    from.after(Event::Begin(action)).map(Plan::Proceed).map_err(|_| IncorrectState { action, from })
}

impl Status {
    /// The status after `event`, or why the lifecycle has no such move. This is the
    /// whole state machine: every write of a state is computed here.
    pub fn after(self, event: Event) -> Result<Status, IllegalTransition> {
        use State::*;
        let illegal = Err(IllegalTransition { from: self, event });
        let Status { state, task } = self;
        let next = match (event, task) {
            (Event::Begin(action), None) => match (action, state) {
                (Action::Start, Stopped) => Status::busy(Pending, Task::Starting),
                (Action::Stop, Running) => Status::busy(Stopping, Task::Stopping),
                (Action::Reboot, Running) => Status::busy(Running, Task::Rebooting),
                (Action::Terminate, s) if s != Terminated => Status::busy(s, Task::Terminating),
                _ => return illegal,
            },
            // Terminate overrides work in flight: that work's own end no longer matches
            // (its compare-and-set fails) and the terminate, queued on the instance's
            // lock, runs next. A failed launch being cleaned up can be terminated too.
            (Event::Begin(Action::Terminate), Some(t)) if t != Task::Terminating => {
                Status::busy(state, Task::Terminating)
            }
            (Event::Begin(_), Some(_)) => return illegal,
            (Event::Finished, Some(t)) => match t {
                Task::Launching | Task::Starting | Task::Rebooting => Status::idle(Running),
                Task::Stopping => Status::idle(Stopped),
                Task::Terminating => Status::idle(Terminated),
                Task::CleaningUp => Status::idle(Error),
            },
            (Event::Settled(to), Some(_)) if matches!(to, Running | Stopped | Error) => Status::idle(to),
            (Event::CleanupPending, Some(Task::Launching | Task::CleaningUp)) => Status::busy(Error, Task::CleaningUp),
            (Event::Observed(to), None) => match (state, to) {
                (Running, Stopped) | (Stopped, Running) | (Running | Stopped, Error) => Status::idle(to),
                _ => return illegal,
            },
            _ => return illegal,
        };
        Ok(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every_status() -> Vec<Status> {
        let mut all: Vec<Status> = ALL_STATES.iter().map(|s| Status::idle(*s)).collect();
        for state in ALL_STATES {
            for task in ALL_TASKS {
                all.push(Status::busy(state, task));
            }
        }
        all
    }

    // REQ-INST-008, REQ-INST-009, REQ-INST-010, REQ-INST-011, REQ-INST-012
    #[test]
    fn every_action_from_every_status() {
        use Action::*;
        use State::*;
        let expected = |action: Action, from: Status| -> Option<Plan> {
            let proceed = |state, task| Some(Plan::Proceed(Status::busy(state, task)));
            match (action, from.state, from.task) {
                (Terminate, Terminated, _) => Some(Plan::AlreadyDone),
                (Start, Running, None) | (Stop, Stopped, None) => Some(Plan::AlreadyDone),
                (Start, _, Some(Task::Starting | Task::Launching | Task::Rebooting)) => Some(Plan::AlreadyDone),
                (Stop, _, Some(Task::Stopping)) => Some(Plan::AlreadyDone),
                (Terminate, _, Some(Task::Terminating)) => Some(Plan::AlreadyDone),
                (Terminate, s, _) => proceed(s, Task::Terminating),
                (_, _, Some(_)) => None,
                (Start, Stopped, None) => proceed(Pending, Task::Starting),
                (Stop, Running, None) => proceed(Stopping, Task::Stopping),
                (Reboot, Running, None) => proceed(Running, Task::Rebooting),
                _ => None,
            }
        };
        for action in [Start, Stop, Reboot, Terminate] {
            for from in every_status() {
                assert_eq!(plan(action, from).ok(), expected(action, from), "{action:?} from {from}");
            }
        }
        let err = plan(Start, Status::idle(Terminated)).unwrap_err();
        assert_eq!(err.to_string(), "cannot start an instance that is terminated: it is terminated");
        let err = plan(Stop, Status::busy(Running, Task::Rebooting)).unwrap_err();
        assert_eq!(err.to_string(), "cannot stop an instance that is running: it is rebooting");
    }

    // REQ-INST-006, REQ-INST-007, REQ-INST-008
    #[test]
    fn tasks_end_in_their_own_state_and_only_tasks_end() {
        use State::*;
        let finished = |state, task| Status::busy(state, task).after(Event::Finished).unwrap();
        assert_eq!(finished(Pending, Task::Launching), Status::idle(Running));
        assert_eq!(finished(Pending, Task::Starting), Status::idle(Running));
        assert_eq!(finished(Stopping, Task::Stopping), Status::idle(Stopped));
        assert_eq!(finished(Running, Task::Rebooting), Status::idle(Running));
        assert_eq!(finished(Running, Task::Terminating), Status::idle(Terminated));
        assert_eq!(finished(Error, Task::CleaningUp), Status::idle(Error));
        assert_eq!(
            Status::LAUNCHING.after(Event::CleanupPending).unwrap(),
            Status::busy(Error, Task::CleaningUp),
            "a launch whose cleanup failed waits for libvirt"
        );
        for state in ALL_STATES {
            assert!(Status::idle(state).after(Event::Finished).is_err(), "{state} has no task to finish");
            assert!(Status::idle(state).after(Event::Settled(Running)).is_err());
            assert!(Status::busy(state, Task::Starting).after(Event::CleanupPending).is_err());
        }
        for task in ALL_TASKS {
            for to in ALL_STATES {
                let settled = Status::busy(Pending, task).after(Event::Settled(to));
                assert_eq!(settled.is_ok(), matches!(to, Running | Stopped | Error), "{task} settled as {to}");
            }
        }
    }

    // REQ-INST-008, REQ-INST-013
    #[test]
    fn the_monitor_moves_only_idle_settled_instances() {
        use State::*;
        for from in every_status() {
            for to in ALL_STATES {
                let allowed = from.task.is_none()
                    && matches!((from.state, to), (Running, Stopped) | (Stopped, Running) | (Running | Stopped, Error));
                assert_eq!(from.after(Event::Observed(to)).is_ok(), allowed, "{from} observed as {to}");
            }
        }
    }

    // REQ-INST-008
    #[test]
    fn terminated_is_final_and_names_round_trip() {
        for state in ALL_STATES {
            assert_eq!(state.as_str().parse::<State>().unwrap(), state);
        }
        for task in ALL_TASKS {
            assert_eq!(task.as_str().parse::<Task>().unwrap(), task);
        }
        let terminated = Status::idle(State::Terminated);
        for event in [
            Event::Begin(Action::Start),
            Event::Begin(Action::Terminate),
            Event::Finished,
            Event::Settled(State::Running),
            Event::CleanupPending,
            Event::Observed(State::Running),
            Event::Observed(State::Error),
        ] {
            assert!(terminated.after(event).is_err(), "{event:?}");
        }
    }
}
