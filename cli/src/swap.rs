//! `vmfs swap create|delete`: VM swap files (`NAME/NAME-<id>.vswp`).
//!
//! `create --hold` is the VM's lifetime: the file is held EXCLUSIVE by this
//! process (a host) until SIGINT/SIGTERM, which is the power-off — the file
//! is then deleted. If the process dies instead, any other host reclaims
//! the file once it has declared this one dead. Without `--hold` the file
//! is created, released and kept, for a VMM to take over
//! (`vmfs::disk::swap::SwapFile::open`) and `swap delete` to remove.

use crate::process::watch_host_events;
use std::sync::mpsc;

use vmfs::disk::swap::{delete_swap, SwapFile};

use crate::process::{block_signals, wait_signal};
use crate::session::{HostArgs, Session};
use crate::units::{human, parse_size};

#[derive(clap::Subcommand, Debug)]
pub enum SwapCommand {
    /// Create VM/VM-<id>.vswp of memory − reservation, fully allocated.
    Create(CreateArgs),
    /// Delete a swap file (refused while a host holds it).
    Delete(DeleteArgs),
}

#[derive(clap::Args, Debug)]
pub struct CreateArgs {
    /// Image file or block device holding the volume.
    pub device: String,
    /// The VM's name (its directory in the volume).
    #[arg(long)]
    pub vm: String,
    /// The VM's memory size (e.g. 4G).
    #[arg(long, value_parser = parse_size)]
    pub memory: u64,
    /// Memory reserved for the VM (never swapped).
    #[arg(long, value_parser = parse_size, default_value = "0")]
    pub reservation: u64,
    /// Hold the file until SIGINT/SIGTERM (the VM's power-off), then delete it.
    #[arg(long)]
    pub hold: bool,
    #[command(flatten)]
    pub host: HostArgs,
}

#[derive(clap::Args, Debug)]
pub struct DeleteArgs {
    /// Image file or block device holding the volume.
    pub device: String,
    /// The swap file's path inside the volume.
    pub path: String,
    #[command(flatten)]
    pub host: HostArgs,
}

pub fn run(c: &SwapCommand) -> Result<(), String> {
    match c {
        SwapCommand::Create(a) => create(a),
        SwapCommand::Delete(a) => {
            let s = Session::join(&a.device, &a.host)?;
            s.run(|s| {
                delete_swap(&s.fs, &a.path).map_err(|e| {
                    let busy = e.is_busy();
                    let mut m = s.err(&e);
                    if busy {
                        m.push_str(": the VM's host still holds it; power the VM off there");
                    }
                    m
                })?;
                println!("deleted {}", a.path);
                Ok(())
            })
        }
    }
}

fn create(a: &CreateArgs) -> Result<(), String> {
    if a.reservation > a.memory {
        return Err(format!(
            "--reservation {} is larger than --memory {}",
            human(a.reservation),
            human(a.memory)
        ));
    }
    let set = a.hold.then(block_signals);
    let s = Session::join(&a.device, &a.host)?;
    let swap = match SwapFile::create(&s.fs, &a.vm, a.memory - a.reservation) {
        Ok(f) => f,
        Err(e) => {
            let m = s.err(e);
            let _ = s.close();
            return Err(m);
        }
    };
    println!("{}", swap.path());
    let Some(set) = set else {
        let r = swap.release().map_err(|e| s.err(e));
        let c = s.close();
        return r.and(c);
    };
    eprintln!(
        "vmfs swap: holding {} ({}) as host slot {}; SIGINT/SIGTERM powers off (deletes it)",
        swap.path(),
        human(swap.size()),
        s.host.slot()
    );
    let reclaimer = s.reclaim_swap("vmfs swap");
    let (tx, rx) = mpsc::channel::<Option<String>>();
    let (htx, hrx) = mpsc::channel();
    s.host.subscribe(htx);
    let t2 = tx.clone();
    watch_host_events(hrx, None, move |why| {
        let _ = t2.send(Some(why));
    });
    std::thread::spawn(move || {
        wait_signal(&set);
        let _ = tx.send(None);
    });
    let fenced = rx.recv().ok().flatten();
    drop(reclaimer);
    if let Some(why) = fenced {
        std::mem::forget(swap);
        let host = s.host.clone();
        drop(s);
        host.abandon();
        return Err(format!(
            "{}: this host was fenced ({why}); its swap file is reclaimed by the others",
            a.device
        ));
    }
    let r = swap.delete().map_err(|e| s.err(e));
    if r.is_ok() {
        println!("vmfs swap: powered off: swap file deleted");
    }
    let c = s.close();
    r.and(c)
}
