//! The `keytrap` binary: a thin CLI over the library crates.

use keytrap::{config, mint, plant, serve};

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use config::{FileConfig, LogFormat, ServeArgs, StorageArgs};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "keytrap",
    version,
    about = "Canary exchange API keys: mint, plant, trap, alert."
)]
struct Cli {
    /// TOML configuration file (keys as in docs/configuration.md).
    #[arg(long, global = true, env = "KEYTRAP_CONFIG")]
    config: Option<PathBuf>,
    /// Log format on stderr.
    #[arg(long, global = true, env = "KEYTRAP_LOG_FORMAT", value_enum)]
    log_format: Option<LogFormat>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run keytrap: management API, trap and worker (all by default), on SQLite unless
    /// told otherwise.
    Serve(ServeArgs),
    /// Apply pending database migrations and exit.
    Migrate(StorageArgs),
    /// Mint canaries through a running server and print them (json, env or csv).
    Mint(mint::MintArgs),
    /// Render a canary for the place it goes (env, json, yaml, csv, sql, k8s, ccxt, cdp).
    Render(plant::RenderArgs),
    /// Seed canaries into a database table or a file (backups, snapshots).
    #[command(subcommand)]
    Plant(plant::PlantCommand),
    /// Check planted canaries are still where keytrap recorded them.
    #[command(subcommand)]
    Verify(plant::VerifyCommand),
    /// Print a fresh random master key (base64), for KEYTRAP_MASTER_KEY.
    GenMasterKey,
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_env("KEYTRAP_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,tower_http=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Human => builder.init(),
    }
}

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = runtime_for(&cli).and_then(|rt| rt.block_on(real_main(cli)));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("keytrap: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// `serve` sizes its runtime by the roles it runs (`serve::runtime_workers`); every
/// other command gets the default.
fn runtime_for(cli: &Cli) -> anyhow::Result<tokio::runtime::Runtime> {
    let roles = match &cli.command {
        Command::Serve(a) => {
            let file = FileConfig::load(cli.config.as_deref())?;
            config::resolve_serve(a, &file)?.roles
        }
        _ => Vec::new(),
    };
    Ok(serve::runtime(&roles)?)
}

async fn real_main(cli: Cli) -> anyhow::Result<()> {
    let file = FileConfig::load(cli.config.as_deref())?;
    init_logging(
        cli.log_format
            .or(file.log_format)
            .unwrap_or(LogFormat::Human),
    );
    match cli.command {
        Command::Serve(a) => serve::run(config::resolve_serve(&a, &file)?).await,
        Command::Migrate(a) => {
            let cfg = config::resolve_storage(&a, &file)?;
            let db = serve::open_database(&cfg.database_url).await?;
            tracing::info!(backend = db.backend(), "database migrated");
            Ok(())
        }
        Command::Mint(a) => mint::run(a).await,
        Command::Render(a) => plant::render(a).await,
        Command::Plant(c) => plant::run_plant(c).await,
        Command::Verify(c) => plant::run_verify(c).await,
        Command::GenMasterKey => {
            println!("{}", keytrap_core::MasterKey::generate().to_base64());
            Ok(())
        }
    }
}
