//! Phase 7 wrecks: join the volume as a host, make a fresh VM directory
//! `wreck-vmN/` with a thin flat base disk holding data and a COWD
//! snapshot over it holding data (through the VMDK library on the mounted
//! filesystem), then break it the way the code describes. VSWP001: a host
//! creates a VM's swap file, holds it EXCLUSIVE, and crashes.

use std::time::Duration;

use vmfs::cluster::{Host, HostConfig, Timeouts};
use vmfs::disk::{FsStore, ReadLock, WriteLock};
use vmfs::format::block::get_u32;
use vmfs::fs::{Falloc, Fs};
use vmfs::vmdk::layer::{read_descriptor, write_descriptor};
use vmfs::vmdk::store::{read_small_file, replace_small_file};
use vmfs::vmdk::{create_flat_disk, create_snapshot, DiskChain, ExtentStore, FlatDiskOptions};
use vmfs::volume::Volume;

use crate::{Code, Disk, FsckError};

fn fail(why: impl std::fmt::Display) -> FsckError {
    FsckError::Wreck(why.to_string())
}

/// Disk size of the wreck VM: small, thin.
const CAPACITY: u64 = 16 << 20;

/// Data written through a chain: a few runs, one crossing a grain.
fn fill(store: &FsStore, disk: &str, seed: u8) -> Result<(), FsckError> {
    let mut c = DiskChain::open(std::sync::Arc::new(store.clone()), disk, true).map_err(fail)?;
    for (k, off) in [0u64, 4096 * 3 + 512, 1 << 20, CAPACITY - 8192]
        .into_iter()
        .enumerate()
    {
        let data: Vec<u8> = (0..8192usize)
            .map(|i| (i as u8).wrapping_mul(seed).wrapping_add(k as u8))
            .collect();
        c.write_at(off, &data).map_err(fail)?;
    }
    c.flush().map_err(fail)
}

/// The wrecking host: beats at the volume's H (so fsck's two liveness
/// samples stay short) but self-fences only after at least 4 s, so a loaded
/// machine (tests run beside builds) does not fence it mid-wreck.
pub(crate) fn host_config(vol: &Volume) -> HostConfig {
    let floor = Timeouts::from_minimums(&vol.header.timeouts);
    let self_fence = floor.self_fence.max(Duration::from_secs(4));
    let mut cfg = HostConfig::new("wreck");
    cfg.timeouts = Some(Timeouts {
        self_fence,
        dead_after: floor
            .dead_after
            .max(self_fence + floor.io_timeout + Duration::from_secs(1)),
        ..floor
    });
    cfg
}

pub fn wreck(disk: &Disk, code: Code) -> Result<Vec<String>, FsckError> {
    let vol = Volume::open(disk.dev.clone())?;
    let cfg = host_config(&vol);
    let host = Host::join(vol, cfg)?;
    host.start();
    let fs = Fs::mount(host.clone())?;
    // Reads unlocked (as fsck reads), writes EXCLUSIVE as a VM's would.
    let store = FsStore::new(fs.clone(), WriteLock::Exclusive, ReadLock::Follow);
    let vm = format!("wreck-vm{}", rand::random::<u32>());
    let made = if code == Code::Vswp001 {
        swap_file(&store, &vm).map(|_| true)
    } else {
        break_disk(&store, &vm, code).map(|_| false)
    };
    let crash = match made {
        Ok(c) => c,
        Err(e) => {
            let _ = fs.unmount();
            drop((store, fs));
            let _ = host.leave();
            return Err(e);
        }
    };
    if crash {
        drop((store, fs));
        host.abandon();
    } else {
        fs.unmount()?;
        drop((store, fs));
        host.leave()?;
    }
    disk.flush()?;
    Ok(vec![format!("/{vm}")])
}

fn break_disk(store: &FsStore, vm: &str, code: Code) -> Result<(), FsckError> {
    store.mkdir_p(vm).map_err(fail)?;
    let base = format!("{vm}/{vm}.vmdk");
    let flat = format!("{vm}/{vm}-flat.vmdk");
    let top = format!("{vm}/{vm}-000001.vmdk");
    let delta = format!("{vm}/{vm}-000001-delta.vmdk");
    create_flat_disk(store, &base, CAPACITY, &FlatDiskOptions::default()).map_err(fail)?;
    fill(store, &base, 3)?;
    create_snapshot(store, &base, &top, 8).map_err(fail)?;
    fill(store, &top, 7)?;
    let io_err = |e: std::io::Error| fail(e);
    match code {
        Code::Vmdk001 => {
            let mut text = read_small_file(store, &base).map_err(fail)?;
            text.extend_from_slice(b"RW 2048 NOSUCHTYPE \"other-flat.vmdk\"\n");
            replace_small_file(store, &base, &text).map_err(fail)?;
        }
        Code::Vmdk002 => store.remove(&flat).map_err(io_err)?,
        Code::Vmdk003 => {
            let f = store.open(&flat, true).map_err(io_err)?;
            f.set_size(CAPACITY / 2).map_err(io_err)?;
            f.sync().map_err(io_err)?;
        }
        Code::Vmdk004 => {
            let f = store.open(&delta, true).map_err(io_err)?;
            f.write_at(&7u32.to_le_bytes(), 4).map_err(io_err)?;
            f.sync().map_err(io_err)?;
        }
        Code::Vmdk005 => {
            let f = store.open(&delta, true).map_err(io_err)?;
            let mut h = vec![0u8; 2048];
            f.read_at(&mut h, 0).map_err(io_err)?;
            let mut gd = [0u8; 4];
            f.read_at(&mut gd, u64::from(get_u32(&h, 20)) * 512)
                .map_err(io_err)?;
            let gt = u64::from(u32::from_le_bytes(gd));
            if gt == 0 {
                return Err(fail("the snapshot has no grain table 0"));
            }
            // Grain 5's entry points far past the end of the file.
            f.write_at(&0x7fff_0000u32.to_le_bytes(), gt * 512 + 5 * 4)
                .map_err(io_err)?;
            f.sync().map_err(io_err)?;
        }
        Code::Vmdk006 => {
            let mut d = read_descriptor(store, &top).map_err(fail)?;
            d.parent_file_name_hint = Some("gone.vmdk".into());
            write_descriptor(store, &top, &d).map_err(fail)?;
        }
        Code::Vmdk007 => {
            let mut d = read_descriptor(store, &base).map_err(fail)?;
            d.cid = d.cid.wrapping_add(1).max(1) & 0x7fff_ffff;
            write_descriptor(store, &base, &d).map_err(fail)?;
        }
        other => return Err(fail(format!("{other} is not a VMDK code"))),
    }
    Ok(())
}

/// A swap file held EXCLUSIVE (open for write), as a running VM's.
fn swap_file(store: &FsStore, vm: &str) -> Result<(), FsckError> {
    let dir = store.mkdir_p(vm).map_err(fail)?;
    let name = format!("{vm}-{:08x}.vswp", rand::random::<u32>());
    let fs = store.fs();
    let a = fs.create(dir, name.as_bytes(), 0o600, 0, 0)?;
    let fh = fs.open(a.ino, true)?;
    fs.fallocate(fh, 0, 8 << 20, Falloc::AllocateLazy { keep_size: false })?;
    fs.fsync(fh)?;
    // The handle stays open: the crash leaves the lock held.
    Ok(())
}
