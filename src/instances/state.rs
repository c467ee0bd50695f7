//! The lifecycle (REQ-INST-008): states, the actions users ask for, and which state
//! allows which action. An action the state does not allow is an error value.

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

    /// Whether the service may move an instance from `self` to `next`.
    pub fn can_become(self, next: State) -> bool {
        use State::*;
        match (self, next) {
            (a, b) if a == b => true,
            (Terminated, _) => false,
            (_, Terminated) | (_, Error) => true,
            (Pending, Running | Stopped) => true,
            (Running, Stopping | Stopped | Pending) => true,
            (Stopping, Stopped | Running) => true,
            (Stopped, Pending | Running) => true,
            (Error, Pending | Running | Stopped) => true,
            _ => false,
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Start,
    Stop,
    Reboot,
    Terminate,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Start => "start",
            Action::Stop => "stop",
            Action::Reboot => "reboot",
            Action::Terminate => "terminate",
        }
    }
}

/// What an action does from a state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// Carry it out.
    Proceed,
    /// Nothing to do (terminating a terminated instance).
    AlreadyDone,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot {} an instance that is {state}{}", action.as_str(), hint(*action, *state))]
pub struct IncorrectState {
    pub action: Action,
    pub state: State,
}

fn hint(action: Action, state: State) -> &'static str {
    match (action, state) {
        (Action::Start, State::Running) => ": it is already running",
        (Action::Stop, State::Stopped) => ": it is already stopped",
        (_, State::Pending) => ": wait until it is running",
        (_, State::Stopping) => ": wait until it is stopped",
        (_, State::Terminated) => ": it is terminated",
        (Action::Start | Action::Stop | Action::Reboot, State::Error) => ": terminate it and launch a new one",
        _ => "",
    }
}

/// Checks an action against the current state.
pub fn plan(action: Action, state: State) -> Result<Plan, IncorrectState> {
    use State::*;
    let allowed = match action {
        Action::Start => state == Stopped,
        Action::Stop | Action::Reboot => state == Running,
        Action::Terminate => return Ok(if state == Terminated { Plan::AlreadyDone } else { Plan::Proceed }),
    };
    if allowed { Ok(Plan::Proceed) } else { Err(IncorrectState { action, state }) }
}

#[cfg(test)]
mod tests {
    use super::*;

    // REQ-INST-008, REQ-INST-009, REQ-INST-010, REQ-INST-011, REQ-INST-012
    #[test]
    fn every_action_in_every_state() {
        use Action::*;
        use State::*;
        let expected = |action: Action, state: State| -> Option<Plan> {
            match (action, state) {
                (Start, Stopped) => Some(Plan::Proceed),
                (Stop | Reboot, Running) => Some(Plan::Proceed),
                (Terminate, Terminated) => Some(Plan::AlreadyDone),
                (Terminate, _) => Some(Plan::Proceed),
                _ => None,
            }
        };
        for action in [Start, Stop, Reboot, Terminate] {
            for state in ALL_STATES {
                assert_eq!(plan(action, state).ok(), expected(action, state), "{action:?} from {state}");
            }
        }
        let err = plan(Start, Running).unwrap_err();
        assert_eq!(err.to_string(), "cannot start an instance that is running: it is already running");
    }

    // REQ-INST-008
    #[test]
    fn terminated_is_final_and_states_round_trip() {
        for state in ALL_STATES {
            assert_eq!(state.as_str().parse::<State>().unwrap(), state);
            assert!(state.can_become(State::Terminated));
            assert_eq!(State::Terminated.can_become(state), state == State::Terminated);
        }
        assert!(!State::Stopped.can_become(State::Stopping));
        assert!(State::Pending.can_become(State::Running));
        assert!(State::Running.can_become(State::Stopping));
        assert!(State::Stopping.can_become(State::Stopped));
    }
}
