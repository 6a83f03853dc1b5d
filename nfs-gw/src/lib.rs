//! nfs-gw: an NFSv3 gateway (RFC 1813, with MOUNT v3 on the same TCP port,
//! ONC RPC RFC 5531, XDR RFC 4506) exporting filesystems that implement
//! [`backend::Backend`]: a vmfs datastore ([`vmfs_backend::VmfsBackend`],
//! the gateway then being itself a vmfs host) or a local directory
//! ([`local::LocalDirBackend`]).
//!
//! # Embedding
//!
//! [`serve_vmfs`] serves a mounted `vmfs::fs::Fs` (its host joined and
//! heartbeating, owned by the caller) as the export `/LABEL` on its own
//! thread and runtime, and returns a [`VmfsGateway`] whose
//! [`VmfsGateway::shutdown`] stops serving and closes (fsync, unlock) every
//! file the gateway opened; the caller then unmounts and leaves the volume.
//! [`Gateway`] does the same for any list of [`Export`]s.
//!
//! Layers, bottom up: [`xdr`] codec → [`record`] marking → [`rpc`] messages
//! → [`nfs3`] / [`mount`] procedures → [`backend`] trait; [`server`] runs it
//! over tokio, [`fhandle`] defines handles, [`export`] access options,
//! [`config`] the TOML file, [`portmap`] optional rpcbind registration.

pub mod backend;
pub mod config;
pub mod export;
pub mod fhandle;
pub mod gateway;
pub mod local;
pub mod mount;
pub mod nfs3;
pub mod portmap;
pub mod record;
pub mod rpc;
pub mod server;
pub mod vmfs_backend;
pub mod xdr;

pub use backend::{Backend, BackendError, Caller, FileId};
pub use export::{Export, ExportOptions};
pub use gateway::{serve_vmfs, Gateway, ServeError, VmfsGateway, VmfsServeOptions};
pub use local::LocalDirBackend;
pub use server::Server;
pub use vmfs_backend::VmfsBackend;
