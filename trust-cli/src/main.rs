//! `linkerd-trust`: see the library crate for the commands.

#![forbid(unsafe_code)]

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = linkerd_trust::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("Error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(linkerd_trust::run(cli)) {
        Ok(code) => code,
        Err(e) => {
            // One line: what is wrong and what to do.
            let msg = format!("{e:#}");
            eprintln!(
                "Error: {}",
                msg.split_whitespace().collect::<Vec<_>>().join(" ")
            );
            ExitCode::FAILURE
        }
    }
}
