//! `GET /view` and `POST /upload/image`: files of the input, output and
//! temp folders, never outside them (403).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use axum::extract::{Multipart, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::{json_response, plain};
use crate::confine::inside;
use crate::state::AppState;

/// The folder of a ComfyUI folder type (`input`, `output`, `temp`).
fn folder(state: &AppState, kind: &str) -> Option<PathBuf> {
    let c = &state.config;
    match kind {
        "input" => Some(c.input_dir.clone()),
        "output" => Some(c.output_dir.clone()),
        "temp" => Some(c.temp_dir.clone()),
        _ => None,
    }
}

/// A plain file name: no separators, not `.`/`..`, no leading dot, no NUL.
fn plain_name(name: &str) -> bool {
    !name.is_empty() && !name.starts_with('.') && !name.contains(['/', '\\', '\0']) && name.len() <= 255
}

/// `base/subfolder`, or `None` when it leaves `base`.
fn subfolder(base: &Path, sub: &str) -> Option<PathBuf> {
    if sub.contains('\0') || sub.starts_with('/') || sub.starts_with('\\') {
        return None;
    }
    let dir = base.join(sub);
    inside(&dir, &[base.to_path_buf()]).then_some(dir)
}

/// `name [output]` (ComfyUI's annotation) → (`name`, `output`).
fn annotated(name: &str) -> (&str, Option<&'static str>) {
    for kind in ["input", "output", "temp"] {
        let tag = match kind {
            "input" => " [input]",
            "output" => " [output]",
            _ => " [temp]",
        };
        if let Some(stem) = name.strip_suffix(tag) {
            return (stem, Some(kind));
        }
    }
    (name, None)
}

/// `GET /view?filename=F&subfolder=S&type=T`: the file's bytes.
pub async fn view(State(state): State<AppState>, Query(q): Query<HashMap<String, String>>) -> Response {
    let Some(raw) = q.get("filename") else { return plain(StatusCode::BAD_REQUEST, "`filename` is required") };
    let (name, annotated_kind) = annotated(raw);
    if !plain_name(name) {
        return plain(StatusCode::FORBIDDEN, "`filename` must be a file name, not a path");
    }
    let kind = annotated_kind.unwrap_or_else(|| q.get("type").map(String::as_str).unwrap_or("output"));
    let Some(base) = folder(&state, kind) else {
        return plain(StatusCode::BAD_REQUEST, "`type` is input, output or temp");
    };
    let Some(dir) = subfolder(&base, q.get("subfolder").map(String::as_str).unwrap_or("")) else {
        return plain(StatusCode::FORBIDDEN, "`subfolder` leaves the folder");
    };
    let file = dir.join(name);
    if !inside(&file, &[base]) {
        return plain(StatusCode::FORBIDDEN, "the file is outside the folder");
    }
    let limit = 1 << 30;
    let remote = state.remote.clone();
    let (kind, sub) = (kind.to_string(), q.get("subfolder").cloned().unwrap_or_default());
    let wanted = name.to_string();
    let read = move || match flow_engine::files::read_bounded(&file, limit, "file") {
        Ok(b) => Some(b),
        // A file a cluster worker wrote: fetched once, then kept here.
        Err(_) => {
            let bytes = remote?.fetch_file(&kind, &sub, &wanted)?;
            let _ = flow_engine::files::write_atomic(&file, &bytes);
            Some(bytes)
        }
    };
    let bytes = match tokio::task::spawn_blocking(read).await {
        Ok(Some(b)) => b,
        _ => return plain(StatusCode::NOT_FOUND, "no such file"),
    };
    let content_type = content_type(name);
    let disposition = format!("filename=\"{}\"", name.replace('"', ""));
    ([(header::CONTENT_TYPE, content_type.to_string()), (header::CONTENT_DISPOSITION, disposition)], bytes)
        .into_response()
}

/// The Content-Type served for a file name; anything a browser would run
/// (HTML, scripts) is served as a download.
fn content_type(name: &str) -> &'static str {
    let ext = Path::new(name).extension().map(|e| e.to_string_lossy().to_ascii_lowercase()).unwrap_or_default();
    match ext.as_str() {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "webp" => "image/webp",
        "gif" => "image/gif",
        "txt" | "md" => "text/plain; charset=utf-8",
        "json" => "application/json",
        _ => "application/octet-stream",
    }
}

/// `POST /upload/image` (multipart: `image`, `type`, `subfolder`,
/// `overwrite`): a file with the same name and content is reused, one with
/// the same name and other content is saved as `name (1).ext`, ...
pub async fn upload_image(State(state): State<AppState>, mut form: Multipart) -> Response {
    let (mut image, mut kind, mut sub, mut overwrite) = (None, "input".to_string(), String::new(), false);
    loop {
        let field = match form.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => return plain(e.status(), &format!("bad upload: {}", e.body_text())),
        };
        let name = field.name().unwrap_or_default().to_string();
        let file_name = field.file_name().map(str::to_string);
        let bytes = match field.bytes().await {
            Ok(b) => b,
            Err(e) => return plain(e.status(), &format!("bad upload: {}", e.body_text())),
        };
        if bytes.len() > state.config.max_upload {
            return plain(StatusCode::PAYLOAD_TOO_LARGE, "the file is larger than the server accepts");
        }
        let text = || String::from_utf8_lossy(&bytes).into_owned();
        match name.as_str() {
            "image" => image = Some((file_name.unwrap_or_default(), bytes.clone())),
            "type" => kind = text(),
            "subfolder" => sub = text(),
            "overwrite" => overwrite = matches!(text().as_str(), "true" | "1"),
            _ => {}
        }
    }
    let Some((file_name, bytes)) = image else { return plain(StatusCode::BAD_REQUEST, "the form has no `image` file") };
    if !plain_name(&file_name) {
        return plain(StatusCode::FORBIDDEN, "the file name must be a name, not a path");
    }
    let Some(base) = folder(&state, &kind) else {
        return plain(StatusCode::BAD_REQUEST, "`type` is input, output or temp");
    };
    let Some(dir) = subfolder(&base, &sub) else {
        return plain(StatusCode::FORBIDDEN, "`subfolder` leaves the folder");
    };
    let (remote, shared_sub) = (state.remote.clone(), sub.clone());
    let share = kind == "input";
    let saved = tokio::task::spawn_blocking(move || {
        let name = save_upload(&base, &dir, &file_name, &bytes, overwrite)?;
        // A cluster's workers read inputs from the cluster, not from this folder.
        if let Some(remote) = remote.filter(|_| share) {
            remote.share_input(&shared_sub, &name, &bytes);
        }
        Ok(name)
    })
    .await;
    match saved {
        Ok(Ok(name)) => json_response(StatusCode::OK, json!({ "name": name, "subfolder": sub, "type": kind })),
        Ok(Err((status, msg))) => plain(status, &msg),
        Err(_) => plain(StatusCode::INTERNAL_SERVER_ERROR, "the upload stopped unexpectedly"),
    }
}

/// Saves an upload; returns the name it got.
fn save_upload(
    base: &Path,
    dir: &Path,
    name: &str,
    bytes: &[u8],
    overwrite: bool,
) -> Result<String, (StatusCode, String)> {
    let (stem, ext) = match name.rsplit_once('.') {
        Some((s, e)) if !s.is_empty() => (s.to_string(), format!(".{e}")),
        _ => (name.to_string(), String::new()),
    };
    let mut candidate = name.to_string();
    let mut i = 1;
    loop {
        let path = dir.join(&candidate);
        if !inside(&path, &[base.to_path_buf()]) {
            return Err((StatusCode::FORBIDDEN, "the file is outside the folder".into()));
        }
        match std::fs::symlink_metadata(&path) {
            Err(_) => break,
            Ok(_) if overwrite => break,
            Ok(meta)
                if meta.is_file()
                    && meta.len() == bytes.len() as u64
                    && std::fs::read(&path).is_ok_and(|b| b == bytes) =>
            {
                return Ok(candidate);
            }
            Ok(_) => {
                candidate = format!("{stem} ({i}){ext}");
                i += 1;
            }
        }
    }
    flow_engine::files::write_atomic(&dir.join(&candidate), bytes)
        .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, format!("cannot save the upload: {e}")))?;
    Ok(candidate)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_duplicates() {
        assert!(plain_name("a.png") && !plain_name("../a.png") && !plain_name("a/b") && !plain_name(".hidden"));
        assert_eq!(annotated("x.png [output]"), ("x.png", Some("output")));
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().canonicalize().unwrap();
        assert_eq!(save_upload(&base, &base, "a.png", b"one", false).unwrap(), "a.png");
        assert_eq!(save_upload(&base, &base, "a.png", b"one", false).unwrap(), "a.png");
        assert_eq!(save_upload(&base, &base, "a.png", b"two", false).unwrap(), "a (1).png");
        assert_eq!(save_upload(&base, &base, "a.png", b"two", false).unwrap(), "a (1).png");
        assert_eq!(save_upload(&base, &base, "a.png", b"three", true).unwrap(), "a.png");
        assert_eq!(std::fs::read(base.join("a.png")).unwrap(), b"three");
        assert!(subfolder(&base, "../x").is_none() && subfolder(&base, "/etc").is_none());
        assert!(subfolder(&base, "sub/dir").is_some());
    }
}
