//! Writing files safely: atomic replacement that never writes through links
//! or over anything but a regular file ([`write_atomic`]), the record of what
//! an output node wrote so that a cached result stands only while the file
//! still holds exactly that ([`WrittenFile`]), and the files a run must not
//! overwrite ([`WriteGuard`]); reading cache files marks them used
//! ([`read_marking_used`]), for budgets that evict the least recently used;
//! files whose size a user controls are read with a bound ([`read_bounded`]).
//!
//! Outputs, model store manifests, fingerprint memos and run records go
//! through [`write_atomic`]. Cache entries and embedding memos are renamed
//! into place too, but without a flush to disk per file: a torn one fails
//! its checksum and is recomputed.

mod atomic;
mod guard;
mod read;
mod used;
mod written;

pub use atomic::{check_target, write_atomic};
pub use guard::WriteGuard;
pub use read::read_bounded;
pub use used::read_marking_used;
pub use written::{resolve, Staleness, WrittenFile};
