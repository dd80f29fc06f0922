#![forbid(unsafe_code)]

use clap::Parser;
use std::process::ExitCode;
use trust_rotation_operator::args::Args;

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match trust_rotation_operator::run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("trust-rotation-operator: {e:#}");
            ExitCode::FAILURE
        }
    }
}
