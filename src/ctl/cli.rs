//! The `usher ctl` command line: subcommands and the [`Action`] each
//! one asks the admin API for (kept here so `main.rs` stays the process's
//! wiring).

use clap::Subcommand;

use super::Action;

/// `usher ctl` subcommands.
#[derive(Subcommand)]
pub enum CtlCommand {
    /// Show the running config source, listeners, origin and room.
    Status,
    /// Re-read the config file (like SIGHUP, but answers with the result).
    Reload,
    /// Admit nobody new; people in line keep their place.
    Pause,
    /// Admit again after a pause.
    Resume,
    /// Take this node out of the load balancer (/readyz fails) before a restart.
    Drain,
    /// Put a drained node back (/readyz succeeds).
    Undrain,
    /// Drop every live change (pause, set ...): the config file's values apply again.
    Reset,
    /// Change a room setting live; it outlasts reloads until `reset`.
    Set {
        /// The setting.
        #[command(subcommand)]
        setting: SetCommand,
    },
    /// Announce to everyone waiting, per language (a language left out
    /// keeps its text; "" clears it). Shown within one poll.
    Message {
        /// The Korean text.
        #[arg(long)]
        ko: Option<String>,
        /// The English text.
        #[arg(long)]
        en: Option<String>,
    },
    /// Show visitors' feedback, newest first, with their place in line then.
    Feedback {
        /// At most this many (default 100).
        #[arg(long)]
        limit: Option<usize>,
    },
}

/// `usher ctl set` settings.
#[derive(Subcommand)]
pub enum SetCommand {
    /// New users admitted per minute.
    Rate {
        /// Per minute.
        per_minute: u64,
    },
    /// Most active users at once.
    Capacity {
        /// Users.
        users: u64,
    },
    /// Mode: fifo, random, passthrough, closed or paused.
    Mode {
        /// The mode.
        mode: String,
    },
    /// The operator's message on the holding page, both languages (empty to clear).
    Message {
        /// The words of the message.
        #[arg(num_args = 0.., trailing_var_arg = true, allow_hyphen_values = true)]
        text: Vec<String>,
    },
}

impl CtlCommand {
    /// The request this command makes.
    pub fn action(self) -> Action {
        match self {
            CtlCommand::Status => Action::Status,
            CtlCommand::Reload => Action::Reload,
            CtlCommand::Pause => Action::Pause,
            CtlCommand::Resume => Action::Resume,
            CtlCommand::Drain => Action::Drain,
            CtlCommand::Undrain => Action::Undrain,
            CtlCommand::Reset => Action::Reset,
            CtlCommand::Message { ko, en } => Action::Announce { ko, en },
            CtlCommand::Feedback { limit } => Action::Feedback(limit),
            CtlCommand::Set { setting } => match setting {
                SetCommand::Rate { per_minute } => Action::SetRate(per_minute),
                SetCommand::Capacity { users } => Action::SetCapacity(users),
                SetCommand::Mode { mode } => Action::SetMode(mode),
                SetCommand::Message { text } => Action::SetMessage(text.join(" ")),
            },
        }
    }
}
