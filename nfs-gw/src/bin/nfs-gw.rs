//! `nfs-gw`: serve exports over NFSv3 + MOUNT v3 on one TCP port.
//!
//! ```text
//! nfs-gw --listen 127.0.0.1:2049 --export-name NAME --dir PATH [--allow CIDR]... \
//!        [--no-root-squash] [--read-only] [--no-rpcbind]
//! nfs-gw --config gateway.toml
//! ```
//!
//! Prints `nfs-gw listening on ADDR` on stdout once bound (with port 0 the
//! kernel picks the port; the line tells which).

use clap::Parser;
use nfs_gw::config::{Config, ExportConfig};
use nfs_gw::{Export, LocalDirBackend, Server};
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Parser, Debug)]
#[command(
    name = "nfs-gw",
    about = "NFSv3 gateway (NFS and MOUNT on one TCP port)"
)]
struct Args {
    /// Address to listen on (loopback by default).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Export name: clients mount `/NAME`.
    #[arg(long, requires = "dir", conflicts_with = "config")]
    export_name: Option<String>,
    /// Directory to export (local-directory backend).
    #[arg(long, requires = "export_name")]
    dir: Option<PathBuf>,
    /// Allowed client network (CIDR); repeatable. Default: loopback only.
    #[arg(long = "allow")]
    allow: Vec<String>,
    /// Do not map uid 0 to nobody.
    #[arg(long)]
    no_root_squash: bool,
    /// Export read-only.
    #[arg(long)]
    read_only: bool,
    /// Do not register with a local rpcbind.
    #[arg(long)]
    no_rpcbind: bool,
    /// TOML configuration with several exports (instead of --export-name/--dir).
    #[arg(long)]
    config: Option<PathBuf>,
}

fn build(args: &Args) -> Result<(SocketAddr, bool, Vec<Export>), String> {
    let (cfg_listen, rpcbind, list) = if let Some(path) = &args.config {
        let c = Config::load(path).map_err(|e| e.to_string())?;
        (Some(c.listen), c.rpcbind, c.exports)
    } else {
        let (Some(name), Some(dir)) = (&args.export_name, &args.dir) else {
            return Err("give --export-name NAME --dir PATH, or --config FILE".into());
        };
        let e = ExportConfig {
            name: name.clone(),
            dir: dir.clone(),
            clients: if args.allow.is_empty() {
                None
            } else {
                Some(args.allow.clone())
            },
            root_squash: !args.no_root_squash,
            read_only: args.read_only,
        };
        (None, true, vec![e])
    };
    let listen = args
        .listen
        .or(cfg_listen)
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 2049)));
    let mut exports = Vec::new();
    for e in &list {
        let opts = e.options().map_err(|x| x.to_string())?;
        let backend =
            LocalDirBackend::new(&e.dir).map_err(|x| format!("export {}: {x}", e.name))?;
        exports.push(Export::new(&e.name, Arc::new(backend), opts));
    }
    Ok((listen, rpcbind && !args.no_rpcbind, exports))
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("NFS_GW_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let (listen, rpcbind, exports) = match build(&args) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("nfs-gw: {e}");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("nfs-gw: tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async move {
        for e in &exports {
            tracing::info!(export = %e.path, id = format_args!("{:#x}", e.id), "exporting");
        }
        let server = match Server::bind(listen, exports).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("nfs-gw: bind {listen}: {e}");
                return ExitCode::FAILURE;
            }
        };
        let addr = match server.local_addr() {
            Ok(a) => a,
            Err(e) => {
                eprintln!("nfs-gw: {e}");
                return ExitCode::FAILURE;
            }
        };
        println!("nfs-gw listening on {addr}");
        let _ = std::io::stdout().flush();
        if rpcbind {
            tokio::spawn(async move {
                let pmap = SocketAddr::from(([127, 0, 0, 1], 111));
                match nfs_gw::portmap::register(pmap, addr.port()).await {
                    Ok(true) => tracing::info!(port = addr.port(), "registered with rpcbind"),
                    Ok(false) => tracing::warn!("rpcbind refused the registration"),
                    Err(e) => tracing::info!(error = %e, "no rpcbind registration (not running?)"),
                }
            });
        }
        match server.run().await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("nfs-gw: {e}");
                ExitCode::FAILURE
            }
        }
    })
}
