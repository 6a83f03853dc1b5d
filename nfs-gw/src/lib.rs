//! nfs-gw: an NFSv3 gateway (RFC 1813, with MOUNT v3 on the same TCP port,
//! ONC RPC RFC 5531, XDR RFC 4506) exporting filesystems that implement
//! [`backend::Backend`] — today a local directory ([`local::LocalDirBackend`]),
//! later a vmfs datastore, with the gateway itself a vmfs host.
//!
//! Layers, bottom up: [`xdr`] codec → [`record`] marking → [`rpc`] messages
//! → [`nfs3`] / [`mount`] procedures → [`backend`] trait; [`server`] runs it
//! over tokio, [`fhandle`] defines handles, [`export`] access options,
//! [`config`] the TOML file, [`portmap`] optional rpcbind registration.

pub mod backend;
pub mod config;
pub mod export;
pub mod fhandle;
pub mod local;
pub mod mount;
pub mod nfs3;
pub mod portmap;
pub mod record;
pub mod rpc;
pub mod server;
pub mod xdr;

pub use backend::{Backend, BackendError, Caller, FileId};
pub use export::{Export, ExportOptions};
pub use local::LocalDirBackend;
pub use server::Server;
