//! flow on NATS JetStream (DESIGN.md §12): `flow worker` executes runs
//! pulled from a work-queue stream, `flow serve --nats` is a front end that
//! only queues, tracks and serves, `flow run --nats` submits from the
//! command line. Run state lives in a key-value bucket (every change a
//! compare-and-swap), node outputs in a shared cache tier (an object
//! store), events on core subjects.
//!
//! - [`cluster`]: the connection, the stream, buckets and stores;
//! - [`names`], [`record`], [`runs`]: subjects and keys, run records, CAS;
//!   [`transitions`]: how a worker changes a run's record;
//! - [`jobs`]: placement (device class, model family) and pulling;
//! - [`follow`]: submitting a run and following it to its end; [`watcher`]:
//!   one watch of the runs bucket for all of a front end's followers;
//! - [`front`]: the server's side; [`worker`]: the worker's side;
//! - [`files`]: output and input files; [`shared_cache`]: the cache tier;
//! - [`status`]: what `flow cluster status` shows.

pub mod cluster;
pub mod files;
pub mod follow;
pub mod front;
pub mod jobs;
pub mod names;
pub mod record;
pub mod runs;
pub mod shared_cache;
pub mod status;
pub mod transitions;
pub mod watcher;
pub mod worker;

pub use cluster::{Cluster, Settings};
pub use shared_cache::NatsCache;
