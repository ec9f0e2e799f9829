//! Files end to end: uploads (raw and multipart), attaching them to messages, downloads for
//! the room's members only with ranges and ETags, thumbnails without metadata, the size
//! limit and quota, the sweep of what nothing names, and hostile uploads.

use std::path::Path;

use crate::common;

use common::{TestServer, test_config};
use serde_json::{Value, json};

/// Files under `dir` (recursively).
fn files_in(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                out.extend(files_in(&path));
            } else {
                out.push(path);
            }
        }
    }
    out
}

fn objects(s: &TestServer) -> Vec<std::path::PathBuf> {
    files_in(&s.state.files.root().join("objects"))
}

fn temporaries(s: &TestServer) -> Vec<std::path::PathBuf> {
    files_in(&s.state.files.root().join("tmp"))
}

async fn raw(s: &TestServer, request: &[u8], close: bool) -> (u16, String) {
    common::raw_http(s.addr, request, close).await
}

/// A `multipart/form-data` body as a browser's `FormData` sends it: `parts` of (name,
/// filename, bytes).
fn multipart(boundary: &str, parts: &[(&str, Option<&str>, &[u8])]) -> Vec<u8> {
    let mut body = Vec::new();
    for (name, filename, bytes) in parts {
        body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        match filename {
            Some(f) => body.extend_from_slice(
                format!(
                    "Content-Disposition: form-data; name=\"{name}\"; filename=\"{f}\"\r\n\
                     Content-Type: application/octet-stream\r\n\r\n"
                )
                .as_bytes(),
            ),
            None => body.extend_from_slice(
                format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n").as_bytes(),
            ),
        }
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    body
}

async fn post_multipart(s: &TestServer, token: &str, body: Vec<u8>) -> (u16, Value) {
    let res = s
        .http
        .post(s.url("/api/v1/uploads/"))
        .header("Authorization", format!("Token {token}"))
        .header("Content-Type", "multipart/form-data; boundary=XyZ")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap())
}

#[tokio::test]
async fn a_file_is_attached_once_and_only_the_rooms_members_download_it() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let carol = s.user("carol").await;
    let room = s.room(&alice, &[&bob], Some("files")).await;
    let text = b"line one\nline two\n".to_vec();
    let (status, upload) = s.upload(&alice.token, "notes.txt", text.clone()).await;
    assert_eq!(status, 201, "{upload}");
    assert_eq!(upload["filename"], "notes.txt");
    assert_eq!(upload["content_type"], "text/plain; charset=utf-8");
    assert_eq!(upload["size"], text.len());
    assert_eq!(upload["thumbnail_url"], Value::Null);
    assert_eq!(upload["width"], Value::Null);
    let id = upload["id"].as_str().unwrap().to_string();
    let url = upload["url"].as_str().unwrap().to_string();
    assert_eq!(url, format!("/api/v1/files/{id}/"));
    // Until a message carries it, it is the uploader's alone.
    assert_eq!(s.download(&url, &alice.token, &[]).await.0, 200);
    assert_eq!(s.download(&url, &bob.token, &[]).await.0, 404);

    let (mut bob_ws, _) = s.ws(&room, &bob, "").await;
    let (status, sent) = s
        .post(
            &format!("/api/v1/chat/{room}/"),
            &alice.token,
            json!({"content": "", "attachments": [id], "client_id": "with-file"}),
        )
        .await;
    assert_eq!(status, 201, "{sent}");
    assert_eq!(sent["content"], "");
    assert_eq!(sent["attachments"], json!([upload]));
    let live = bob_ws.next_of("message").await;
    assert_eq!(live["message"]["attachments"], json!([upload]), "{live}");
    let (_, history) = s.get(&format!("/api/v1/chat/{room}/"), &bob.token).await;
    assert_eq!(history["results"][0]["attachments"], json!([upload]));

    // Bob downloads it: the bytes, a strong ETag, as an attachment that cannot run.
    let (status, headers, bytes) = s.download(&url, &bob.token, &[]).await;
    assert_eq!(status, 200);
    assert_eq!(bytes, text);
    let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&text));
    assert_eq!(headers["etag"], format!("\"{sha}\"").as_str());
    assert_eq!(headers["content-type"], "application/octet-stream");
    assert_eq!(
        headers["content-disposition"],
        "attachment; filename=\"notes.txt\"; filename*=UTF-8''notes.txt"
    );
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(
        headers["content-security-policy"],
        "sandbox; default-src 'none'"
    );
    assert_eq!(
        headers["cache-control"],
        "private, max-age=31536000, immutable"
    );
    assert_eq!(headers["accept-ranges"], "bytes");
    let etag = headers["etag"].to_str().unwrap().to_string();
    let (status, _, bytes) = s
        .download(&url, &bob.token, &[("If-None-Match", &etag)])
        .await;
    assert_eq!((status, bytes.len()), (304, 0));
    let (status, headers, bytes) = s
        .download(&url, &bob.token, &[("Range", "bytes=5-7")])
        .await;
    assert_eq!(status, 206);
    assert_eq!(bytes, b"one");
    assert_eq!(
        headers["content-range"],
        format!("bytes 5-7/{}", text.len()).as_str()
    );
    let (status, _, bytes) = s.download(&url, &bob.token, &[("Range", "bytes=-4")]).await;
    assert_eq!((status, bytes.as_slice()), (206, &b"two\n"[..]));
    // A range of bytes the client does not have (another ETag) is answered whole.
    let (status, _, bytes) = s
        .download(
            &url,
            &bob.token,
            &[("Range", "bytes=0-1"), ("If-Range", "\"other\"")],
        )
        .await;
    assert_eq!((status, bytes), (200, text.clone()));
    let (status, headers, _) = s
        .download(&url, &bob.token, &[("Range", "bytes=999-")])
        .await;
    assert_eq!(status, 416);
    assert_eq!(
        headers["content-range"],
        format!("bytes */{}", text.len()).as_str()
    );
    // Someone else is told nothing.
    let (status, _, bytes) = s.download(&url, &carol.token, &[]).await;
    assert_eq!(status, 404);
    assert!(!String::from_utf8_lossy(&bytes).contains("notes"));
    assert_eq!(s.download(&url, "", &[]).await.0, 401);

    // A retried send returns the original and attaches nothing again; a new send of the
    // same upload is refused, and so is someone else's upload.
    let (status, again) = s
        .post(
            &format!("/api/v1/chat/{room}/"),
            &alice.token,
            json!({"content": "", "attachments": [id], "client_id": "with-file"}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(again["id"], sent["id"]);
    let (status, reply) = s
        .post(
            &format!("/api/v1/chat/{room}/"),
            &alice.token,
            json!({"content": "again", "attachments": [id]}),
        )
        .await;
    assert_eq!(
        (status, &reply["error"]["code"]),
        (409, &json!("conflict")),
        "{reply}"
    );
    let mine = s
        .upload_id(&alice.token, "mine.txt", b"mine".to_vec())
        .await;
    let (status, reply) = s
        .post(
            &format!("/api/v1/chat/{room}/"),
            &bob.token,
            json!({"content": "look", "attachments": [mine]}),
        )
        .await;
    assert_eq!(status, 404, "{reply}");
    assert_eq!(reply["error"]["fields"]["attachments"], "no such upload");
    let (status, reply) = s
        .post(
            &format!("/api/v1/chat/{room}/"),
            &alice.token,
            json!({"content": "", "attachments": []}),
        )
        .await;
    assert_eq!(status, 400, "{reply}");
    let eleven: Vec<String> = (0..11).map(|i| format!("{i:024}")).collect();
    let (status, reply) = s
        .post(
            &format!("/api/v1/chat/{room}/"),
            &alice.token,
            json!({"content": "many", "attachments": eleven}),
        )
        .await;
    assert_eq!(status, 400, "{reply}");
    assert_eq!(reply["error"]["code"], "validation_error");
    // Refused sends changed nothing: bob's upload was not attached, and the room has one
    // message.
    let (_, history) = s.get(&format!("/api/v1/chat/{room}/"), &bob.token).await;
    assert_eq!(history["results"].as_array().unwrap().len(), 1);
    assert_eq!(
        s.download(&format!("/api/v1/files/{mine}/"), &bob.token, &[])
            .await
            .0,
        404
    );

    // Over the WebSocket too.
    let (mut alice_ws, _) = s.ws(&room, &alice, "").await;
    alice_ws
        .send_json(json!({"action": "message", "content": "by socket", "attachments": [mine]}))
        .await;
    let frame = bob_ws.next_of("message").await;
    assert_eq!(
        frame["message"]["attachments"][0]["id"],
        mine.as_str(),
        "{frame}"
    );
    assert_eq!(
        s.download(&format!("/api/v1/files/{mine}/"), &bob.token, &[])
            .await
            .0,
        200
    );

    // Removed from the room, bob can download nothing of it any more.
    let (status, _) = s
        .call(
            "DELETE",
            &format!("/api/v1/chat/{room}/members/{}/", bob.id),
            Some(&alice.token),
            None,
        )
        .await;
    assert_eq!(status, 204);
    assert_eq!(s.download(&url, &bob.token, &[]).await.0, 404);
    assert_eq!(s.download(&url, &alice.token, &[]).await.0, 200);
}

#[tokio::test]
async fn an_image_gets_thumbnails_that_carry_none_of_its_metadata() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let secret = "GPS 48.8584 N 2.2945 E";
    let photo = common::jpeg_with_exif(2000, 1500, secret);
    assert!(photo.windows(secret.len()).any(|w| w == secret.as_bytes()));
    let (status, upload) = s.upload(&alice.token, "holiday.jpg", photo.clone()).await;
    assert_eq!(status, 201, "{upload}");
    assert_eq!(upload["content_type"], "image/jpeg");
    assert_eq!(
        (upload["width"].as_u64(), upload["height"].as_u64()),
        (Some(2000), Some(1500))
    );
    let id = upload["id"].as_str().unwrap();
    assert_eq!(
        upload["thumbnail_url"],
        format!("/api/v1/files/{id}/thumbnail/320/")
    );
    assert_eq!(
        upload["preview_url"],
        format!("/api/v1/files/{id}/thumbnail/1280/")
    );
    for (url, longest) in [
        (&upload["thumbnail_url"], 320),
        (&upload["preview_url"], 1280),
    ] {
        let (status, headers, bytes) = s.download(url.as_str().unwrap(), &alice.token, &[]).await;
        assert_eq!(status, 200);
        assert_eq!(headers["content-type"], "image/jpeg");
        assert!(
            headers["content-disposition"]
                .to_str()
                .unwrap()
                .starts_with("inline;")
        );
        let img = image::load_from_memory(&bytes).unwrap();
        assert_eq!((img.width(), img.height()), (longest, longest * 3 / 4));
        assert!(
            !bytes.windows(4).any(|w| w == b"Exif") && !bytes.windows(3).any(|w| w == b"GPS"),
            "metadata survived in {url}"
        );
    }
    // The original is served inline as the image it is, byte for byte.
    let (status, headers, bytes) = s
        .download(upload["url"].as_str().unwrap(), &alice.token, &[])
        .await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "image/jpeg");
    assert_eq!(bytes, photo);
    // No other sizes, and no thumbnails of what is not an image.
    let other = format!("/api/v1/files/{id}/thumbnail/640/");
    assert_eq!(s.download(&other, &alice.token, &[]).await.0, 404);
    let text = s.upload_id(&alice.token, "a.txt", b"text".to_vec()).await;
    let thumb = format!("/api/v1/files/{text}/thumbnail/320/");
    assert_eq!(s.download(&thumb, &alice.token, &[]).await.0, 404);
    let (_, metrics) = {
        let res = s.http.get(s.url("/metrics")).send().await.unwrap();
        (res.status(), res.text().await.unwrap())
    };
    let thumbnails = metrics
        .lines()
        .find_map(|l| l.strip_prefix("chat_thumbnail_seconds_count "))
        .and_then(|n| n.parse::<u64>().ok());
    assert!(thumbnails.is_some_and(|n| n >= 1), "{metrics}");
    assert!(metrics.contains("chat_uploads_stored 2"), "{metrics}");
}

#[tokio::test]
async fn a_browsers_multipart_form_uploads_its_one_file() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let png = common::png(30, 20);
    let body = multipart(
        "XyZ",
        &[("note", None, b"ignored"), ("file", Some("pic.png"), &png)],
    );
    let (status, upload) = post_multipart(&s, &alice.token, body).await;
    assert_eq!(status, 201, "{upload}");
    assert_eq!(upload["filename"], "pic.png");
    assert_eq!(upload["content_type"], "image/png");
    assert_eq!(
        (upload["width"].as_u64(), upload["height"].as_u64()),
        (Some(30), Some(20))
    );
    let (_, _, bytes) = s
        .download(upload["url"].as_str().unwrap(), &alice.token, &[])
        .await;
    assert_eq!(bytes, png);

    let two = multipart(
        "XyZ",
        &[("file", Some("a.txt"), b"a"), ("file", Some("b.txt"), b"b")],
    );
    let (status, reply) = post_multipart(&s, &alice.token, two).await;
    assert_eq!(
        (status, &reply["error"]["code"]),
        (400, &json!("bad_request")),
        "{reply}"
    );
    let none = multipart("XyZ", &[("note", None, b"no file")]);
    let (status, reply) = post_multipart(&s, &alice.token, none).await;
    assert_eq!(status, 400, "{reply}");
    // Cut off in the middle of the file part.
    let mut cut = multipart("XyZ", &[("file", Some("c.bin"), &[7u8; 4000])]);
    cut.truncate(2000);
    let (status, reply) = post_multipart(&s, &alice.token, cut).await;
    assert_eq!(status, 400, "{reply}");
    assert!(temporaries(&s).is_empty(), "{:?}", temporaries(&s));
    // A small image's two thumbnails are the same bytes: one file.
    assert_eq!(objects(&s).len(), 2, "the image and its thumbnail");
}

#[tokio::test]
async fn the_size_limit_and_the_quota_refuse_with_413_and_keep_nothing() {
    let mut config = test_config();
    config.limits.max_upload_bytes = 1000;
    config.limits.upload_quota_bytes = 2500;
    let s = TestServer::start_with(config).await;
    let alice = s.user("alice").await;
    // Refused from its Content-Length, before a byte of the body is read.
    let request = format!(
        "POST /api/v1/uploads/ HTTP/1.1\r\nHost: x\r\nAuthorization: Token {}\r\n\
         Content-Length: 1001\r\n\r\n",
        alice.token
    );
    let (status, body) = raw(&s, request.as_bytes(), false).await;
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("at most 1000 bytes"), "{body}");
    // Refused while streaming, with no length announced.
    let mut chunked = format!(
        "POST /api/v1/uploads/ HTTP/1.1\r\nHost: x\r\nAuthorization: Token {}\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        alice.token
    )
    .into_bytes();
    for _ in 0..6 {
        chunked.extend_from_slice(b"C8\r\n");
        chunked.extend_from_slice(&[b'x'; 200]);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let (status, body) = raw(&s, &chunked, true).await;
    assert_eq!(status, 413, "{body}");
    assert!(temporaries(&s).is_empty());
    assert!(objects(&s).is_empty());
    // The quota: two of 900 bytes fit, a third does not.
    for i in 0..2 {
        s.upload_id(&alice.token, "f.bin", vec![i; 900]).await;
    }
    let (status, reply) = s.upload(&alice.token, "f.bin", vec![9; 900]).await;
    assert_eq!(status, 413, "{reply}");
    assert_eq!(reply["error"]["code"], "payload_too_large");
    assert!(
        reply["error"]["message"]
            .as_str()
            .unwrap()
            .contains("quota"),
        "{reply}"
    );
    assert_eq!(objects(&s).len(), 2);
    // Others have their own quota.
    let bob = s.user("bob").await;
    s.upload_id(&bob.token, "f.bin", vec![1; 900]).await;
}

#[tokio::test]
async fn uploads_nothing_attached_and_deleted_messages_files_are_swept() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let room = s.room(&alice, &[&bob], None).await;
    let stale = s
        .upload_id(&alice.token, "stale.txt", b"stale".to_vec())
        .await;
    let kept = s
        .upload_id(&alice.token, "kept.txt", b"kept".to_vec())
        .await;
    let same = b"the same bytes".to_vec();
    let first = s.upload_id(&alice.token, "one.txt", same.clone()).await;
    let second = s.upload_id(&alice.token, "two.txt", same.clone()).await;
    assert_eq!(objects(&s).len(), 3, "the same bytes are stored once");
    let post = |attachments: Vec<&String>| json!({"content": "files", "attachments": attachments});
    let (_, one) = s
        .post(
            &format!("/api/v1/chat/{room}/"),
            &alice.token,
            post(vec![&first]),
        )
        .await;
    s.post(
        &format!("/api/v1/chat/{room}/"),
        &alice.token,
        post(vec![&second]),
    )
    .await;
    // The stale upload was made long ago.
    let stale_id = stale.clone();
    s.sqlite
        .write(move |c| {
            c.execute(
                "UPDATE uploads SET created = 0 WHERE public_id = ?1",
                [stale_id],
            )?;
            Ok(())
        })
        .await
        .unwrap();
    s.state.files.sweep_soon.notify_one();
    s.until("the stale upload's file is swept", |_| {
        objects(&s).len() == 2
    })
    .await;
    let gone = format!("/api/v1/files/{stale}/");
    assert_eq!(s.download(&gone, &alice.token, &[]).await.0, 404);
    let kept_url = format!("/api/v1/files/{kept}/");
    assert_eq!(s.download(&kept_url, &alice.token, &[]).await.0, 200);

    // Deleting one message of the shared bytes keeps them for the other.
    let (status, tombstone) = s
        .call(
            "DELETE",
            &format!("/api/v1/messages/{}/", one["id"]),
            Some(&alice.token),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(tombstone["attachments"], json!([]));
    assert_eq!(
        s.download(&format!("/api/v1/files/{first}/"), &bob.token, &[])
            .await
            .0,
        404
    );
    let (status, _, bytes) = s
        .download(&format!("/api/v1/files/{second}/"), &bob.token, &[])
        .await;
    assert_eq!((status, bytes), (200, same));
    let removed = chat_server::uploads::sweep(&s.state).await.unwrap();
    assert_eq!(removed.0, 0, "the shared bytes are still named");
    assert_eq!(objects(&s).len(), 2);

    // A deleted message's own bytes leave the disk soon after, with nothing else asking: the
    // deletion wakes the sweeper.
    let (_, two) = s
        .post(
            &format!("/api/v1/chat/{room}/"),
            &alice.token,
            post(vec![&kept]),
        )
        .await;
    assert_eq!(two["attachments"][0]["id"], kept.as_str());
    let (status, _) = s
        .call(
            "DELETE",
            &format!("/api/v1/messages/{}/", two["id"]),
            Some(&alice.token),
            None,
        )
        .await;
    assert_eq!(status, 200);
    s.until("the deleted message's file is swept", |_| {
        objects(&s).len() == 1
    })
    .await;
    assert_eq!(s.download(&kept_url, &alice.token, &[]).await.0, 404);
}

#[tokio::test]
async fn hostile_files_get_their_documented_answers_and_nothing_half_written_remains() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let room = s.room(&alice, &[&bob], None).await;
    // Active content: stored, typed from its bytes, and only ever downloaded, sandboxed.
    let svg =
        br#"<svg xmlns="http://www.w3.org/2000/svg"><script>alert(document.cookie)</script></svg>"#;
    let html = b"<!DOCTYPE html><html><body><script>alert(1)</script></body></html>";
    let polyglot = b"GIF89a/*\x01\x00\x01\x00\x00\x00\x00*/=1;alert(document.domain)//";
    let mut bomb = b"\x89PNG\r\n\x1a\n".to_vec();
    {
        // IHDR claiming 100,000 × 100,000 pixels, then an empty image and the end.
        let chunk = |kind: &[u8], data: &[u8]| {
            let mut c = (data.len() as u32).to_be_bytes().to_vec();
            let mut body = kind.to_vec();
            body.extend_from_slice(data);
            c.extend_from_slice(&body);
            c.extend_from_slice(&crc32(&body).to_be_bytes());
            c
        };
        let mut ihdr = 100_000u32.to_be_bytes().to_vec();
        ihdr.extend_from_slice(&100_000u32.to_be_bytes());
        ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
        bomb.extend(chunk(b"IHDR", &ihdr));
        bomb.extend(chunk(b"IDAT", b"\x78\x9c\x03\x00\x00\x00\x00\x01"));
        bomb.extend(chunk(b"IEND", b""));
    }
    for (name, bytes, sniffed) in [
        ("cat.svg", &svg[..], "image/svg+xml"),
        ("page.html", &html[..], "text/html"),
        ("cat.gif", &polyglot[..], "image/gif"),
        ("bomb.png", &bomb[..], "image/png"),
    ] {
        let (status, upload) = s.upload(&alice.token, name, bytes.to_vec()).await;
        assert_eq!(status, 201, "{name}: {upload}");
        assert_eq!(upload["content_type"], sniffed, "{name}");
        assert_eq!(
            upload["thumbnail_url"],
            Value::Null,
            "{name} is not a decodable image"
        );
        let (status, headers, got) = s
            .download(upload["url"].as_str().unwrap(), &alice.token, &[])
            .await;
        assert_eq!((status, got.as_slice()), (200, bytes), "{name}");
        assert_eq!(
            headers["content-type"], "application/octet-stream",
            "{name}"
        );
        assert!(
            headers["content-disposition"]
                .to_str()
                .unwrap()
                .starts_with("attachment;")
        );
        assert_eq!(
            headers["content-security-policy"],
            "sandbox; default-src 'none'"
        );
        assert_eq!(headers["x-content-type-options"], "nosniff");
    }
    // A type the client claims changes nothing: the bytes decide.
    let res = s
        .http
        .post(s.url("/api/v1/uploads/?filename=x.png"))
        .header("Authorization", format!("Token {}", alice.token))
        .header("Content-Type", "image/png")
        .body(html.to_vec())
        .send()
        .await
        .unwrap();
    let upload: Value = res.json().await.unwrap();
    assert_eq!(upload["content_type"], "text/html");

    // An empty file, a NUL or too long a name: refused.
    let (status, reply) = s.upload(&alice.token, "empty.txt", Vec::new()).await;
    assert_eq!(
        (status, &reply["error"]["fields"]["file"]),
        (400, &json!("must not be empty"))
    );
    let (status, reply) = s.upload(&alice.token, "a\0b.txt", b"x".to_vec()).await;
    assert_eq!(status, 400, "{reply}");
    assert_eq!(reply["error"]["code"], "validation_error");
    let (status, _) = s
        .upload(&alice.token, &"n".repeat(256), b"x".to_vec())
        .await;
    assert_eq!(status, 400);
    // Path traversal and header tricks are kept for display, never used as a path, and
    // cleaned for the header.
    let evil = "../../etc/pass\"wd\r\nSet-Cookie: a=b\u{202E}gpj.exe";
    let (status, upload) = s.upload(&alice.token, evil, b"harmless".to_vec()).await;
    assert_eq!(status, 201, "{upload}");
    assert_eq!(upload["filename"], evil);
    let (_, headers, _) = s
        .download(upload["url"].as_str().unwrap(), &alice.token, &[])
        .await;
    assert_eq!(
        headers["content-disposition"],
        "attachment; filename=\"pass_wd__Set-Cookie: a=b_gpj.exe\"; \
         filename*=UTF-8''pass_wd__Set-Cookie%3A%20a%3Db_gpj.exe"
    );
    assert!(headers.get("set-cookie").is_none());
    assert!(!s.state.files.root().parent().unwrap().join("etc").exists());

    // A body shorter than its Content-Length, then the client goes away.
    let request = format!(
        "POST /api/v1/uploads/ HTTP/1.1\r\nHost: x\r\nAuthorization: Token {}\r\n\
         Content-Length: 5000\r\n\r\nonly a little",
        alice.token
    );
    let (status, body) = raw(&s, request.as_bytes(), true).await;
    assert_eq!(status, 400, "{body}");
    // A non-member attaches to a room: the room does not exist for her; bob attaches
    // alice's upload: no such upload.
    let carol = s.user("carol").await;
    let hers = s.upload_id(&carol.token, "c.txt", b"carol".to_vec()).await;
    let (status, _) = s
        .post(
            &format!("/api/v1/chat/{room}/"),
            &carol.token,
            json!({"content": "hi", "attachments": [hers]}),
        )
        .await;
    assert_eq!(status, 404);
    let (status, reply) = s
        .post(
            &format!("/api/v1/chat/{room}/"),
            &bob.token,
            json!({"content": "hi", "attachments": [hers]}),
        )
        .await;
    assert_eq!(
        (status, &reply["error"]["fields"]["attachments"]),
        (404, &json!("no such upload"))
    );
    let (_, history) = s.get(&format!("/api/v1/chat/{room}/"), &alice.token).await;
    assert!(history["results"].as_array().unwrap().is_empty());
    assert!(temporaries(&s).is_empty(), "{:?}", temporaries(&s));
    assert_eq!(s.call("GET", "/healthz", None, None).await.0, 200);
}

/// CRC-32 (IEEE), as PNG chunks carry it.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                0xEDB8_8320 ^ (crc >> 1)
            } else {
                crc >> 1
            };
        }
    }
    !crc
}
