//! Files over REST: `POST /api/v1/uploads/` takes a file (a raw body, or the one file of a
//! `multipart/form-data` body, as a browser's `FormData` sends it), streamed to disk; a send
//! then attaches upload ids (`attachments`). `GET /api/v1/files/<id>/` and
//! `GET /api/v1/files/<id>/thumbnail/<320|1280>/` serve them to the members of the room the
//! file was posted in (and to the uploader until then), with ranges and strong ETags.

use std::time::Duration;

use bytes::{Buf, Bytes};
use futures_util::{Stream, StreamExt};
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::http::header::{self, HeaderMap, HeaderValue};
use warp::{Filter, Reply};

use crate::auth::authenticated;
use crate::error::ApiError;
use crate::files::{ReceiveError, Received, sniff, thumbs};
use crate::filters::{FromQuery, Params, query, with_state};
use crate::metrics::{Bound, METRICS};
use crate::model::Auth;
use crate::state::AppState;
use crate::store::now_ms;
use crate::store::uploads::{ImageInfo, Upload};

/// How often the sweeper runs when nothing wakes it sooner.
const SWEEP_EVERY: Duration = Duration::from_secs(3600);
/// What a multipart body may carry besides its file (boundaries, part headers, small fields).
const MULTIPART_OVERHEAD: u64 = 64 * 1024;

pub fn routes(state: &AppState) -> BoxedFilter<(warp::reply::Response,)> {
    let upload = warp::path!("api" / "v1" / "uploads")
        .and(warp::post())
        .and(authenticated(state))
        .and(warp::header::optional::<String>("content-type"))
        .and(warp::header::optional::<u64>("content-length"))
        .and(query::<UploadQuery>())
        .and(warp::body::stream())
        .and(with_state(state))
        .then(
            |auth, content_type, length, query, body, state| async move {
                upload(auth, content_type, length, query, bytes_of(body), state)
                    .await
                    .into_response()
            },
        );
    let original = warp::path!("api" / "v1" / "files" / String)
        .and(warp::get())
        .and(authenticated(state))
        .and(warp::header::headers_cloned())
        .and(with_state(state))
        .then(|id, auth, headers, state| async move {
            download(id, None, auth, headers, state)
                .await
                .into_response()
        });
    let thumbnail = warp::path!("api" / "v1" / "files" / String / "thumbnail" / u32)
        .and(warp::get())
        .and(authenticated(state))
        .and(warp::header::headers_cloned())
        .and(with_state(state))
        .then(|id, px, auth, headers, state| async move {
            download(id, Some(px), auth, headers, state)
                .await
                .into_response()
        });
    upload.or(original).unify().or(thumbnail).unify().boxed()
}

/// A request body's chunks as `Bytes`.
fn bytes_of<B: Buf>(
    body: impl Stream<Item = Result<B, warp::Error>> + Send + 'static,
) -> impl Stream<Item = Result<Bytes, warp::Error>> + Send + 'static {
    body.map(|chunk| chunk.map(|mut b| b.copy_to_bytes(b.remaining())))
}

/// `?filename=` of a raw upload.
pub struct UploadQuery {
    filename: Option<String>,
}

impl FromQuery for UploadQuery {
    fn from_query(params: &Params) -> Result<UploadQuery, ApiError> {
        Ok(UploadQuery {
            filename: params.get("filename").map(str::to_string),
        })
    }
}

fn mib(bytes: u64) -> String {
    let mib = bytes as f64 / (1024.0 * 1024.0);
    if mib >= 1.0 {
        format!("{mib:.0} MiB")
    } else {
        format!("{bytes} bytes")
    }
}

/// `POST /api/v1/uploads/[?filename=]`: 201 with the upload as a message will carry it.
async fn upload<S>(
    auth: Auth,
    content_type: Option<String>,
    length: Option<u64>,
    query: Result<UploadQuery, ApiError>,
    body: S,
    state: AppState,
) -> Result<warp::reply::Response, ApiError>
where
    S: Stream<Item = Result<Bytes, warp::Error>> + Send + 'static,
{
    let query = query?;
    let limits = &state.config.limits;
    let user = auth.user.id;
    let Some(_running) = state.files.start(user, limits.uploads_at_once_per_user) else {
        METRICS.refused(Bound::UploadsAtOnce);
        return Err(ApiError::RateLimited {
            retry_after_secs: 1,
        });
    };
    let used = state.store.upload_usage(user).await?;
    let room_left = limits.upload_quota_bytes.saturating_sub(used);
    let limit = limits.max_upload_bytes.min(room_left);
    let too_large = || {
        if room_left < limits.max_upload_bytes {
            ApiError::FileTooLarge(format!(
                "the file would take you past your upload quota of {} ({} left)",
                mib(limits.upload_quota_bytes),
                mib(room_left)
            ))
        } else {
            ApiError::FileTooLarge(format!(
                "a file may be at most {}",
                mib(limits.max_upload_bytes)
            ))
        }
    };
    let boundary = content_type
        .as_deref()
        .filter(|t| {
            t.trim_start()
                .to_ascii_lowercase()
                .starts_with("multipart/")
        })
        .map(|t| {
            multer::parse_boundary(t)
                .map_err(|_| ApiError::BadRequest("a multipart body needs its boundary".into()))
        })
        .transpose()?;
    let overhead = if boundary.is_some() {
        MULTIPART_OVERHEAD
    } else {
        0
    };
    if length.is_some_and(|n| n > limit + overhead) {
        return Err(too_large());
    }
    let failed = |e: ReceiveError| match e {
        ReceiveError::TooLarge => too_large(),
        ReceiveError::Body(why) => {
            ApiError::BadRequest(format!("the upload's body broke off: {why}"))
        }
        ReceiveError::Storage(e) => storage_error(e),
    };
    let (received, given_name) = match boundary {
        None => {
            let received = state.files.receive(body, limit).await.map_err(failed)?;
            (received, query.filename)
        }
        Some(boundary) => receive_multipart(&state, body, boundary, limit)
            .await
            .map_err(|e| match e {
                Multipart::Receive(e) => failed(e),
                Multipart::Api(e) => e,
            })?,
    };
    let filename = given_name.unwrap_or_else(|| "file".into());
    sniff::check_filename(&filename).map_err(|why| ApiError::validation("filename", why))?;
    if received.size == 0 {
        return Err(ApiError::validation("file", "must not be empty"));
    }
    METRICS.upload_bytes.add(received.size);
    let content_type = sniff::content_type(&received.head);
    let made = match sniff::image_format(&content_type) {
        Some(format) => make_thumbnails(&state, &received, format).await?,
        None => None,
    };
    let upload = commit(&state, user, received, filename, content_type, made).await?;
    METRICS.uploads.inc();
    let mut response = warp::reply::json(&upload.attachment()).into_response();
    *response.status_mut() = StatusCode::CREATED;
    Ok(response)
}

/// Why a multipart upload failed.
enum Multipart {
    Receive(ReceiveError),
    Api(ApiError),
}

/// Receives the one file of a `multipart/form-data` body: the first part with a file name.
/// Other parts are read and ignored; a second file is refused.
async fn receive_multipart<S>(
    state: &AppState,
    body: S,
    boundary: String,
    limit: u64,
) -> Result<(Received, Option<String>), Multipart>
where
    S: Stream<Item = Result<Bytes, warp::Error>> + Send + 'static,
{
    let constraints = multer::Constraints::new().size_limit(
        multer::SizeLimit::new()
            .whole_stream(limit + MULTIPART_OVERHEAD)
            .per_field(limit + 1),
    );
    let mut form = multer::Multipart::with_constraints(body, boundary, constraints);
    let malformed = |e: multer::Error| match e {
        multer::Error::StreamSizeExceeded { .. } | multer::Error::FieldSizeExceeded { .. } => {
            Multipart::Receive(ReceiveError::TooLarge)
        }
        e => Multipart::Api(ApiError::BadRequest(format!(
            "the multipart body is malformed or incomplete: {e}"
        ))),
    };
    let mut found = None;
    while let Some(field) = form.next_field().await.map_err(malformed)? {
        let Some(name) = field.file_name().map(str::to_string) else {
            // A plain field: read (within the stream's limit) and ignored.
            field.bytes().await.map_err(malformed)?;
            continue;
        };
        if found.is_some() {
            return Err(Multipart::Api(ApiError::BadRequest(
                "an upload carries one file; send each file on its own".into(),
            )));
        }
        let received = state
            .files
            .receive(field, limit)
            .await
            .map_err(|e| match e {
                // The part ended early: the body was cut off.
                ReceiveError::Body(why) => Multipart::Api(ApiError::BadRequest(format!(
                    "the multipart body is malformed or incomplete: {why}"
                ))),
                e => Multipart::Receive(e),
            })?;
        found = Some((received, Some(name)));
    }
    found.ok_or_else(|| {
        Multipart::Api(ApiError::validation(
            "file",
            "the multipart body has no part with a filename",
        ))
    })
}

/// The thumbnails of an uploaded image, made off the async workers, one image per permit of
/// `files.decoding`; `None` if it cannot be decoded within the limits (it is then served as
/// a download, never inline).
async fn make_thumbnails(
    state: &AppState,
    received: &Received,
    format: image::ImageFormat,
) -> Result<Option<thumbs::Made>, ApiError> {
    let _permit = state
        .files
        .decoding
        .acquire()
        .await
        .map_err(ApiError::internal)?;
    let path = received.temp.to_path_buf();
    let timer = METRICS.thumbnail_latency.start_timer();
    let made = tokio::task::spawn_blocking(move || thumbs::make(&path, format))
        .await
        .map_err(ApiError::internal)?;
    drop(timer);
    Ok(match made {
        Ok(made) => Some(made),
        Err(why) => {
            tracing::info!(
                why,
                "an uploaded image is served as a download, without thumbnails"
            );
            None
        }
    })
}

/// A storage failure while receiving or putting files in place.
fn storage_error(e: std::io::Error) -> ApiError {
    if e.raw_os_error() == Some(libc::ENOSPC) || e.raw_os_error() == Some(libc::EDQUOT) {
        tracing::warn!(error = %e, "the files directory is full");
        ApiError::StorageFull
    } else {
        ApiError::internal(anyhow::Error::new(e).context("cannot store an upload"))
    }
}

/// Puts the upload's files in place, then commits its row, holding off the sweeper between.
async fn commit(
    state: &AppState,
    owner: crate::model::UserId,
    received: Received,
    filename: String,
    content_type: String,
    made: Option<thumbs::Made>,
) -> Result<Upload, ApiError> {
    let files = state.files.clone();
    let thumbnails = match &made {
        Some(made) => {
            let (small, large) = (made.small.clone(), made.large.clone());
            let files = files.clone();
            let written = tokio::task::spawn_blocking(move || {
                Ok::<_, std::io::Error>((files.write_temp(&small)?, files.write_temp(&large)?))
            })
            .await
            .map_err(ApiError::internal)?;
            Some(written.map_err(storage_error)?)
        }
        None => None,
    };
    let image = made
        .as_ref()
        .zip(thumbnails.as_ref())
        .map(|(m, (s, l))| ImageInfo {
            width: m.width,
            height: m.height,
            small: s.0.clone(),
            large: l.0.clone(),
            thumb_type: m.content_type.to_string(),
        });
    let upload = Upload {
        public_id: crate::chat::new_public_id(),
        owner,
        sha256: received.sha256.clone(),
        filename,
        content_type,
        size: received.size,
        image,
        created: now_ms(),
    };
    let _held = files.lock().await;
    let placing = files.clone();
    let sha = received.sha256.clone();
    tokio::task::spawn_blocking(move || {
        placing.commit(received.temp, &sha)?;
        if let Some(((small, small_temp), (large, large_temp))) = thumbnails {
            placing.commit(small_temp, &small)?;
            placing.commit(large_temp, &large)?;
        }
        Ok::<_, std::io::Error>(())
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(storage_error)?;
    let quota = state.config.limits.upload_quota_bytes;
    if let Err(e) = state.store.create_upload(upload.clone(), quota).await {
        // Files in place that no row names: the sweeper's.
        files.sweep_soon.notify_one();
        return Err(e.into());
    }
    Ok(upload)
}

/// A byte range a download asked for, within a file of `size` bytes: `bytes=a-b`, `bytes=a-`
/// or `bytes=-n`. `Ok(None)`: serve the whole file (no range, or several, which a server may
/// answer whole); `Err(())`: nothing of the file is in the range (416).
fn range(header: Option<&str>, size: u64) -> Result<Option<(u64, u64)>, ()> {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let (start, end) = spec.split_once('-').ok_or(())?;
    let (start, end) = (start.trim(), end.trim());
    let parsed = |s: &str| s.parse::<u64>().map_err(|_| ());
    let (first, last) = if start.is_empty() {
        let n = parsed(end)?;
        if n == 0 {
            return Err(());
        }
        (size.saturating_sub(n), size.checked_sub(1).ok_or(())?)
    } else {
        let first = parsed(start)?;
        let last = if end.is_empty() {
            size.saturating_sub(1)
        } else {
            parsed(end)?.min(size.saturating_sub(1))
        };
        (first, last)
    };
    if first >= size || first > last {
        return Err(());
    }
    Ok(Some((first, last)))
}

/// `GET /api/v1/files/<id>/` (the file as uploaded) and `.../thumbnail/<320|1280>/`.
async fn download(
    id: String,
    px: Option<u32>,
    auth: Auth,
    headers: HeaderMap,
    state: AppState,
) -> Result<warp::reply::Response, ApiError> {
    if !crate::chat::plausible_public_id(&id) {
        return Err(ApiError::NotFound);
    }
    let upload = state
        .store
        .visible_upload(id, auth.user.id)
        .await?
        .ok_or(ApiError::NotFound)?;
    let (sha, content_type, inline) = match (px, &upload.image) {
        (None, image) => {
            // Only an image the server could decode is shown; everything else is a download,
            // whatever its bytes claim to be.
            let inline = image.is_some() && sniff::is_inline(&upload.content_type);
            let shown = if inline {
                upload.content_type.as_str()
            } else {
                "application/octet-stream"
            };
            (upload.sha256.clone(), shown.to_string(), inline)
        }
        (Some(thumbs::SMALL), Some(image)) => (image.small.clone(), image.thumb_type.clone(), true),
        (Some(thumbs::LARGE), Some(image)) => (image.large.clone(), image.thumb_type.clone(), true),
        (Some(_), _) => return Err(ApiError::NotFound),
    };
    let etag = format!("\"{sha}\"");
    let path = state.files.object(&sha);
    let mut file = match tokio::fs::File::open(&path).await {
        Ok(file) => file,
        // The message was deleted and its file swept since the row was read.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            tracing::warn!(upload = %upload.public_id, path = %path.display(), "a file named by an upload is gone");
            return Err(ApiError::NotFound);
        }
        Err(e) => {
            return Err(ApiError::internal(
                anyhow::Error::new(e).context(format!("cannot open {}", path.display())),
            ));
        }
    };
    let size = file.metadata().await.map_err(ApiError::internal)?.len();
    let mut response = warp::reply::Response::new(Default::default());
    let h = response.headers_mut();
    let set = |h: &mut HeaderMap, name: header::HeaderName, value: &str| {
        if let Ok(value) = HeaderValue::from_str(value) {
            h.insert(name, value);
        }
    };
    set(h, header::ETAG, &etag);
    // The bytes behind an id never change; they are private to the room.
    set(
        h,
        header::CACHE_CONTROL,
        "private, max-age=31536000, immutable",
    );
    set(h, header::ACCEPT_RANGES, "bytes");
    set(
        h,
        header::CONTENT_SECURITY_POLICY,
        "sandbox; default-src 'none'",
    );
    set(
        h,
        header::HeaderName::from_static("cross-origin-resource-policy"),
        "same-origin",
    );
    let not_modified = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    if not_modified {
        *response.status_mut() = StatusCode::NOT_MODIFIED;
        return Ok(response);
    }
    set(h, header::CONTENT_TYPE, &content_type);
    set(
        h,
        header::CONTENT_DISPOSITION,
        &sniff::disposition(&upload.filename, inline),
    );
    // A range applies only to the bytes the client has (`If-Range` with our ETag).
    let if_range_ok = headers
        .get(header::IF_RANGE)
        .and_then(|v| v.to_str().ok())
        .is_none_or(|v| v.trim() == etag);
    let asked = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    let wanted = if if_range_ok {
        range(asked, size)
    } else {
        Ok(None)
    };
    let (first, len) = match wanted {
        Ok(Some((first, last))) => {
            *response.status_mut() = StatusCode::PARTIAL_CONTENT;
            set(
                response.headers_mut(),
                header::CONTENT_RANGE,
                &format!("bytes {first}-{last}/{size}"),
            );
            (first, last - first + 1)
        }
        Ok(None) => (0, size),
        Err(()) => {
            *response.status_mut() = StatusCode::RANGE_NOT_SATISFIABLE;
            set(
                response.headers_mut(),
                header::CONTENT_RANGE,
                &format!("bytes */{size}"),
            );
            response.headers_mut().remove(header::CONTENT_DISPOSITION);
            return Ok(response);
        }
    };
    set(
        response.headers_mut(),
        header::CONTENT_LENGTH,
        &len.to_string(),
    );
    if first > 0 {
        use tokio::io::AsyncSeekExt;
        file.seek(std::io::SeekFrom::Start(first))
            .await
            .map_err(ApiError::internal)?;
    }
    use tokio::io::AsyncReadExt;
    let stream = tokio_util::io::ReaderStream::with_capacity(file.take(len), 64 * 1024);
    let (parts, _) = response.into_parts();
    let body = warp::reply::stream(stream).into_response().into_body();
    Ok(warp::reply::Response::from_parts(parts, body))
}

/// Removes uploads no message attached in time, then the files no upload names: at start,
/// every [`SWEEP_EVERY`], and soon after something was freed (`files.sweep_soon`).
pub async fn sweeper(state: AppState) {
    let mut tick = tokio::time::interval(SWEEP_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = state.files.sweep_soon.notified() => {}
        }
        match sweep(&state).await {
            Ok((0, _)) => {}
            Ok((files, bytes)) => tracing::info!(files, bytes, "removed files nothing names"),
            Err(e) => tracing::warn!(error = %e, "the file sweep failed"),
        }
    }
}

/// One pass of the sweeper: what it removed (files, bytes).
pub async fn sweep(state: &AppState) -> anyhow::Result<(u64, u64)> {
    let keep_ms = (state.config.limits.unattached_upload_secs as i64).saturating_mul(1000);
    state.store.expire_uploads(now_ms() - keep_ms).await?;
    let files = state.files.clone();
    let _held = files.lock().await;
    let referenced = state.store.referenced_files().await?;
    let sweeping = files.clone();
    let removed = tokio::task::spawn_blocking(move || sweeping.sweep(&referenced)).await??;
    METRICS.files_removed.add(removed.0);
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_read_as_rfc_9110_says() {
        assert_eq!(range(None, 10), Ok(None));
        assert_eq!(range(Some("bytes=0-4"), 10), Ok(Some((0, 4))));
        assert_eq!(range(Some("bytes=5-"), 10), Ok(Some((5, 9))));
        assert_eq!(range(Some("bytes=-3"), 10), Ok(Some((7, 9))));
        assert_eq!(range(Some("bytes=-30"), 10), Ok(Some((0, 9))));
        assert_eq!(range(Some("bytes=8-100"), 10), Ok(Some((8, 9))));
        assert_eq!(range(Some("bytes=0-1,4-5"), 10), Ok(None));
        assert_eq!(range(Some("items=0-1"), 10), Ok(None));
        assert_eq!(range(Some("bytes=10-"), 10), Err(()));
        assert_eq!(range(Some("bytes=5-2"), 10), Err(()));
        assert_eq!(range(Some("bytes=-0"), 10), Err(()));
        assert_eq!(range(Some("bytes=x-2"), 10), Err(()));
    }
}
