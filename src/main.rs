use std::process::ExitCode;
use tltui::cli::{Cli, Command};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` of mimalloc's `mi_option_t` (libmimalloc-sys names no constant).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// The environment variable candle reads for its thread pool's spin rounds.
const CANDLE_SPIN_LIMIT_VAR: &str = "CANDLE_BARRIER_POOL_SPIN_LIMIT";

fn main() -> ExitCode {
    // Keep freed pages mapped: training frees and reallocates activations of the same sizes every
    // step, and returning them to the OS makes the kernel zero them again each time.
    // SAFETY: setting an allocator option before any thread starts.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    // candle's elementwise thread pool spins 25,000 rounds after each operation before it
    // sleeps, taking the core from rayon's decoders and kernels that run in between (a cold
    // ViT feature pass: 31 s spinning, 24.5 s with 200 rounds). The user's setting wins.
    if std::env::var_os(CANDLE_SPIN_LIMIT_VAR).is_none() {
        // Set before any thread starts, so none reads the environment meanwhile.
        std::env::set_var(CANDLE_SPIN_LIMIT_VAR, "200");
    }
    let cli = Cli::parse_args();
    let result = match &cli.command {
        Some(Command::Inspect(args)) => tltui::inspect::run(args).map(|()| ExitCode::SUCCESS),
        Some(Command::Bench(args)) => tltui::bench::run(args).map(|()| ExitCode::SUCCESS),
        Some(Command::Predict(args)) => tltui::infer::predict(args).map(|()| ExitCode::SUCCESS),
        Some(Command::Eval(args)) => tltui::infer::eval(args).map(|()| ExitCode::SUCCESS),
        Some(Command::Export(args)) => tltui::infer::export(args).map(|()| ExitCode::SUCCESS),
        Some(Command::Embed(args)) => tltui::embed::run(args).map(|()| ExitCode::SUCCESS),
        Some(Command::Backbones(args)) => tltui::backbones::run(args).map(|()| ExitCode::SUCCESS),
        Some(Command::Push(args)) => tltui::share::push::run(args).map(|()| ExitCode::SUCCESS),
        Some(Command::Recipe(args)) => {
            tltui::train::checkpoint::print_recipe(&args.checkpoint).map(|()| ExitCode::SUCCESS)
        }
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
