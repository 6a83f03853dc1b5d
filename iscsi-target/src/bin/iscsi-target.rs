//! `iscsi-target`: serves files or block devices as iSCSI LUNs.
//!
//! `iscsi-target --listen 127.0.0.1:3260 --target IQN --lun PATH [--lun PATH...]`
//! or `iscsi-target --config FILE.toml`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use iscsi_target::config::{ChapCredentials, Config, LunConfig, TargetConfig};
use iscsi_target::server::Server;

#[derive(Parser, Debug)]
#[command(
    version,
    about = "iSCSI target serving files and block devices as LUNs"
)]
struct Args {
    /// TOML configuration (targets, LUNs, portals, CHAP, ACLs).
    #[arg(long, conflicts_with_all = ["target", "lun"])]
    config: Option<PathBuf>,
    /// Portal address(es) to listen on.
    #[arg(long)]
    listen: Vec<SocketAddr>,
    /// Target IQN (with --lun).
    #[arg(long, requires = "lun")]
    target: Option<String>,
    /// Backing file or block device; repeat for more LUNs (the first is LUN 0).
    #[arg(long)]
    lun: Vec<PathBuf>,
    /// Initiator allowed to use the target (repeatable; default: any).
    #[arg(long)]
    allow_initiator: Vec<String>,
    /// One-way CHAP user (secret from the ISCSI_CHAP_SECRET environment variable).
    #[arg(long)]
    chap_user: Option<String>,
    /// I/O worker threads per LUN (default 32).
    #[arg(long)]
    io_workers: Option<usize>,
    /// Print the port actually bound (useful with port 0) on stdout.
    #[arg(long)]
    print_port: bool,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("ISCSI_TARGET_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let config = match build_config(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("iscsi-target: {e}");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(256)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("iscsi-target: starting runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let server = match Server::new(config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("iscsi-target: {e}");
            return ExitCode::FAILURE;
        }
    };
    let print_port = args.print_port;
    let r = rt.block_on(async move {
        let s2 = server.clone();
        let run = tokio::spawn(async move { s2.run().await });
        if print_port {
            for _ in 0..200 {
                let bound = server.bound.lock().map(|b| b.clone()).unwrap_or_default();
                if bound.len() == server.config.portals.len() {
                    for b in bound {
                        println!("listening {b}");
                    }
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        }
        match run.await {
            Ok(r) => r,
            Err(e) => Err(std::io::Error::other(e.to_string())),
        }
    });
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("iscsi-target: {e}");
            ExitCode::FAILURE
        }
    }
}

fn build_config(a: &Args) -> Result<Config, String> {
    let mut c = if let Some(p) = &a.config {
        Config::from_toml(p).map_err(|e| e.to_string())?
    } else {
        let iqn = a
            .target
            .clone()
            .ok_or("--target IQN (or --config) is required")?;
        if a.lun.is_empty() {
            return Err("at least one --lun PATH is required".into());
        }
        let chap = match &a.chap_user {
            Some(u) => Some(ChapCredentials {
                user: u.clone(),
                secret: std::env::var("ISCSI_CHAP_SECRET")
                    .map_err(|_| "--chap-user needs ISCSI_CHAP_SECRET in the environment")?,
            }),
            None => None,
        };
        Config {
            portals: vec![SocketAddr::from(([127, 0, 0, 1], 3260))],
            tpgt: 1,
            targets: vec![TargetConfig {
                iqn,
                luns: a
                    .lun
                    .iter()
                    .map(|p| LunConfig {
                        path: p.clone(),
                        read_only: false,
                    })
                    .collect(),
                initiators: a.allow_initiator.clone(),
                chap,
                mutual_chap: None,
            }],
            discovery_chap: None,
            io_workers: iscsi_target::config::default_io_workers(),
        }
    };
    if let Some(n) = a.io_workers {
        c.io_workers = n;
    }
    if !a.listen.is_empty() {
        c.portals = a.listen.clone();
    }
    c.validate().map_err(|e| e.to_string())?;
    Ok(c)
}
