use clap::Parser;
use std::process::ExitCode;
use tltui::cli::{Cli, Command};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Some(Command::Inspect(args)) => tltui::inspect::run(args).map(|()| ExitCode::SUCCESS),
        None => match &cli.train.dataset {
            Some(dataset) if cli.train.headless => tltui::headless::run(&cli.train, dataset),
            Some(dataset) => tltui::ui::run(&cli.train, dataset),
            None => {
                use clap::CommandFactory;
                let _ = Cli::command().print_help();
                return ExitCode::from(2);
            }
        },
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
