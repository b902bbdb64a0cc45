//! `relay`: run smartemailing-relay on one machine, check its config, inspect and replay deliveries.
//!
//! This file only parses the command line, sets up logging, dispatches to the command's
//! module and turns the outcome into an exit code: 0 done, 1 a mistake the user can fix
//! (usage, config, input), 2 an internal failure.

mod args;
mod birthdays;
mod check;
mod config;
mod deliveries;
mod serve;

use args::{BirthdaysCommand, Cli, Command, LogFormat};
use clap::Parser;
use std::process::ExitCode;

/// A failure the user can fix (exit 1) or an internal one (exit 2).
pub(crate) enum Failure {
    User(anyhow::Error),
    Internal(anyhow::Error),
}

/// A failure the user can fix: exit 1.
pub(crate) fn user(e: impl Into<anyhow::Error>) -> Failure {
    Failure::User(e.into())
}

/// A failure of the relay or its environment: exit 2.
pub(crate) fn internal(e: impl Into<anyhow::Error>) -> Failure {
    Failure::Internal(e.into())
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => 0,
                _ => 1,
            };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    init_logging(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(code) => code,
        Err(Failure::User(e)) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
        Err(Failure::Internal(e)) => {
            eprintln!("internal error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal as _;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

async fn run(command: Command) -> Result<ExitCode, Failure> {
    match command {
        Command::Serve {
            config,
            listen,
            state,
        } => serve::serve(config, &listen, &state).await,
        Command::Check { config, events } => check::check(config, &events),
        Command::Render { event, config } => check::render(&event, config),
        Command::Deliveries {
            status,
            rule,
            since,
            event_id,
            limit,
            json,
            state,
            aws,
        } => {
            let stores = deliveries::open_stores(&state, aws).await?;
            let filter = deliveries::Filter {
                status,
                rule,
                since,
                event_id,
                limit,
            };
            deliveries::deliveries(filter, json, &stores).await
        }
        Command::Birthdays {
            command:
                BirthdaysCommand::Run {
                    date,
                    config,
                    state,
                },
        } => birthdays::run(date, config, &state).await,
        Command::Replay {
            ids,
            all_dead,
            rule,
            since,
            config,
            state,
            aws,
        } => {
            let stores = deliveries::open_stores(&state, aws).await?;
            deliveries::replay(ids, all_dead, rule, since, config, &state, &stores).await
        }
    }
}
