//! `durabus dlq ...`: list dead letters, redrive them to their origin.

use anyhow::Context as _;
use clap::{Args, Subcommand};
use durabus::consume::{
    DEFAULT_DLQ_STREAM, DLQ_CONSUMER, DLQ_DELIVERIES, DLQ_ERROR, DLQ_SEQ, DLQ_STREAM,
};
use durabus::{validate_stream_name, ReplayOptions};
use serde_json::json;

use crate::confirm::confirm;
use crate::output::{print_json, print_text, stored_json, Listing};
use crate::session::{finish, open_bus, Access, Global};

/// The `dlq` verbs.
#[derive(Debug, Subcommand)]
pub(crate) enum DlqCommand {
    /// List dead letters with where they came from and why.
    #[command(alias = "list")]
    Ls(Which),
    /// Publish dead letters to their origin subject again and remove them
    /// from the dead-letter stream.
    Redrive {
        #[command(flatten)]
        which: Which,
        /// Do not ask for confirmation.
        #[arg(short, long)]
        force: bool,
    },
}

/// Which dead letters.
#[derive(Debug, Args)]
pub(crate) struct Which {
    /// The dead-letter stream.
    #[arg(long, default_value = DEFAULT_DLQ_STREAM)]
    stream: String,
    /// Only dead letters from this origin stream (default subjects
    /// `$DLQ.<stream>.<consumer>`).
    #[arg(long, value_name = "STREAM")]
    origin: Option<String>,
    /// Only dead letters of this consumer (with --origin).
    #[arg(long, requires = "origin")]
    consumer: Option<String>,
}

impl Which {
    fn filter(&self) -> Option<String> {
        let origin = self.origin.as_ref()?;
        Some(format!(
            "$DLQ.{origin}.{}",
            self.consumer.as_deref().unwrap_or("*")
        ))
    }
}

/// Runs a `dlq` verb.
pub(crate) async fn run(global: &Global, command: DlqCommand) -> anyhow::Result<()> {
    let which = match &command {
        DlqCommand::Ls(w) | DlqCommand::Redrive { which: w, .. } => w,
    };
    validate_stream_name(&which.stream)?;
    let bus = open_bus(global.url(), Access::Existing).await?;
    let result = match &command {
        DlqCommand::Ls(which) => ls(global, &bus, which).await,
        DlqCommand::Redrive { which, force } => redrive(global, &bus, which, *force).await,
    };
    finish(&bus, global.url(), result).await
}

async fn ls(global: &Global, bus: &durabus::Bus, which: &Which) -> anyhow::Result<()> {
    let mut options = ReplayOptions::from_seq(1).stop_at_end();
    if let Some(f) = which.filter() {
        options = options.filter(f);
    }
    let mut replay = match bus.replay(&which.stream, options).await {
        Ok(replay) => replay,
        // The consumer runner creates the stream with the first dead letter.
        Err(durabus::Error::StreamNotFound { .. }) => {
            if !global.json {
                print_text(&format!(
                    "no dead letters: there is no dead-letter stream {} yet (the consumer \
                     runner creates it when it sets the first message aside)",
                    which.stream
                ))?;
            }
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    let mut table = Listing::new(
        [
            "seq",
            "origin",
            "consumer",
            "origin seq",
            "deliveries",
            "error",
        ],
        0..1,
    );
    let mut n = 0;
    while let Some(letter) = replay.next().await {
        let letter = letter?;
        n += 1;
        if global.json {
            print_json(&stored_json(&letter))?;
            continue;
        }
        let h = |name| letter.headers.get(name).unwrap_or("-").to_owned();
        table.add_row([
            letter.seq.to_string(),
            h(DLQ_STREAM),
            h(DLQ_CONSUMER),
            h(DLQ_SEQ),
            h(DLQ_DELIVERIES),
            h(DLQ_ERROR),
        ]);
    }
    if !global.json {
        if n == 0 {
            print_text(&format!("no dead letters in {}", which.stream))?;
        } else {
            print_text(&table.text())?;
        }
    }
    Ok(())
}

async fn redrive(
    global: &Global,
    bus: &durabus::Bus,
    which: &Which,
    force: bool,
) -> anyhow::Result<()> {
    confirm(
        force,
        &format!(
            "republish the dead letters of {} to their origin",
            which.stream
        ),
    )?;
    let stats = bus
        .redrive(&which.stream, which.filter().as_deref())
        .await
        .context("redrive stopped")?;
    if global.json {
        print_json(&json!({ "republished": stats.republished, "skipped": stats.skipped }))?;
    } else {
        print_text(&format!(
            "republished {} dead letter(s) to their origin{}",
            stats.republished,
            if stats.skipped > 0 {
                format!("; {} without origin headers left in place", stats.skipped)
            } else {
                String::new()
            }
        ))?;
    }
    Ok(())
}
