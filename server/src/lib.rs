//! flow-server: `flow serve`, ComfyUI's HTTP + WebSocket API over one flow
//! engine, with a queue and a history that survive restarts.
//!
//! - [`config`]: listen address, folders, token, limits;
//! - [`queue`] and [`store`]: the queue and the history, persisted;
//! - [`prepare`] and [`confine`]: a submitted prompt (ComfyUI workflow or
//!   flow graph) made into a graph that only touches the server's folders;
//! - [`worker`] and [`reporter`]: runs on the engine, their events as
//!   ComfyUI's WebSocket messages ([`hub`]); [`remote`]: runs in a cluster
//!   instead (`flow serve --nats`);
//! - `routes`: the HTTP API; [`server`]: start and stop.

pub mod auth;
pub mod comfy_map;
pub mod config;
pub mod confine;
pub mod hub;
pub mod job;
pub mod prepare;
pub mod queue;
pub mod remote;
pub mod reporter;
mod routes;
pub mod runlog;
pub mod server;
pub mod state;
pub mod store;
pub mod web;
pub mod worker;

pub use config::ServerConfig;
pub use server::{serve, serve_with};
