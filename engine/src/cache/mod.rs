//! Content-addressed cache (in progress).
