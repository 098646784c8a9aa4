//! Writing files safely: atomic replacement that never writes through links
//! or over anything but a regular file ([`write_atomic`]), the record of what
//! an output node wrote so that a cached result stands only while the file
//! still holds exactly that ([`WrittenFile`]), and the files a run must not
//! overwrite ([`WriteGuard`]).
//!
//! Every file flow writes (outputs, cache entries, memos, model store
//! manifests, run records) goes through [`write_atomic`].

mod atomic;
mod guard;
mod written;

pub use atomic::{check_target, write_atomic};
pub use guard::WriteGuard;
pub use written::{resolve, Staleness, WrittenFile};
