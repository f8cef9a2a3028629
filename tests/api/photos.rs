//! Listing photos (issue 22): uploads through the admin forms (multipart), re-encoding
//! (metadata dropped, orientation applied), the refusals that write nothing, removal and
//! cover, content addressing, `/media/` and its validators, and pages that change at
//! once. Every image is made here, in memory.

use std::io::Cursor;

use diesel::prelude::*;
use image::{DynamicImage, ImageFormat, Rgb, RgbImage};
use property_listings::models::photo;
use property_listings::schema::{photos, properties, property_photos};

use crate::helpers::{TestApp, header, public_routes, spawn_app};

// ---------- images made in memory ----------

/// A `width` × `height` picture whose pixels depend on `seed` (distinct seeds, distinct
/// bytes), in `format`.
fn picture(width: u32, height: u32, seed: u8, format: ImageFormat) -> Vec<u8> {
    let img = RgbImage::from_fn(width, height, |x, y| {
        Rgb([
            (x * 255 / width) as u8,
            (y * 255 / height) as u8,
            seed.wrapping_mul(37),
        ])
    });
    let mut out = Vec::new();
    DynamicImage::ImageRgb8(img)
        .write_to(&mut Cursor::new(&mut out), format)
        .expect("encodes");
    out
}

fn jpeg(width: u32, height: u32, seed: u8) -> Vec<u8> {
    picture(width, height, seed, ImageFormat::Jpeg)
}

fn png(width: u32, height: u32, seed: u8) -> Vec<u8> {
    picture(width, height, seed, ImageFormat::Png)
}

/// A JPEG carrying an APP1 Exif segment with an orientation tag and GPS coordinates
/// (48° 51' 24" N), inserted right after the start-of-image marker.
fn jpeg_with_exif(width: u32, height: u32, orientation: u16) -> Vec<u8> {
    let mut tiff = Vec::new();
    tiff.extend_from_slice(b"II\x2a\x00\x08\x00\x00\x00");
    // IFD0 at 8: Orientation, and the pointer to the GPS IFD at 38.
    tiff.extend_from_slice(&2u16.to_le_bytes());
    tiff.extend_from_slice(&0x0112u16.to_le_bytes());
    tiff.extend_from_slice(&3u16.to_le_bytes());
    tiff.extend_from_slice(&1u32.to_le_bytes());
    tiff.extend_from_slice(&orientation.to_le_bytes());
    tiff.extend_from_slice(&[0, 0]);
    tiff.extend_from_slice(&0x8825u16.to_le_bytes());
    tiff.extend_from_slice(&4u16.to_le_bytes());
    tiff.extend_from_slice(&1u32.to_le_bytes());
    tiff.extend_from_slice(&38u32.to_le_bytes());
    tiff.extend_from_slice(&0u32.to_le_bytes());
    // GPS IFD at 38: latitude reference and latitude (three rationals at 68).
    tiff.extend_from_slice(&2u16.to_le_bytes());
    tiff.extend_from_slice(&1u16.to_le_bytes());
    tiff.extend_from_slice(&2u16.to_le_bytes());
    tiff.extend_from_slice(&2u32.to_le_bytes());
    tiff.extend_from_slice(b"N\0\0\0");
    tiff.extend_from_slice(&2u16.to_le_bytes());
    tiff.extend_from_slice(&5u16.to_le_bytes());
    tiff.extend_from_slice(&3u32.to_le_bytes());
    tiff.extend_from_slice(&68u32.to_le_bytes());
    tiff.extend_from_slice(&0u32.to_le_bytes());
    for (num, den) in [(48u32, 1u32), (51, 1), (2400, 100)] {
        tiff.extend_from_slice(&num.to_le_bytes());
        tiff.extend_from_slice(&den.to_le_bytes());
    }
    assert_eq!(tiff.len(), 92);
    let mut app1 = vec![0xFF, 0xE1];
    app1.extend_from_slice(&((2 + 6 + tiff.len()) as u16).to_be_bytes());
    app1.extend_from_slice(b"Exif\0\0");
    app1.extend_from_slice(&tiff);
    let plain = jpeg(width, height, 1);
    let mut out = plain[..2].to_vec();
    out.extend_from_slice(&app1);
    out.extend_from_slice(&plain[2..]);
    out
}

/// A valid PNG header for a 1-bit greyscale `width` × `height` image, with all its
/// (zero) pixel rows compressed: a few kilobytes that decode to 40+ megapixels.
fn huge_png(width: u32, height: u32) -> Vec<u8> {
    use flate2::write::ZlibEncoder;
    use std::io::Write;
    fn chunk(out: &mut Vec<u8>, kind: &[u8], data: &[u8]) {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let mut crc = flate2::Crc::new();
        crc.update(kind);
        crc.update(data);
        out.extend_from_slice(kind);
        out.extend_from_slice(data);
        out.extend_from_slice(&crc.sum().to_be_bytes());
    }
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[1, 0, 0, 0, 0]);
    let row = vec![0u8; 1 + (width as usize).div_ceil(8)];
    let mut z = ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    for _ in 0..height {
        z.write_all(&row).unwrap();
    }
    let idat = z.finish().unwrap();
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    chunk(&mut out, b"IHDR", &ihdr);
    chunk(&mut out, b"IDAT", &idat);
    chunk(&mut out, b"IEND", &[]);
    out
}

// ---------- multipart forms ----------

/// A `multipart/form-data` body, built by hand as a browser sends it.
struct Form {
    boundary: String,
    body: Vec<u8>,
}

impl Form {
    fn new() -> Self {
        Self {
            boundary: "----photos-test-boundary-7MA4YWxkTrZu0gW".into(),
            body: Vec::new(),
        }
    }

    fn text(mut self, name: &str, value: &str) -> Self {
        self.body.extend_from_slice(
            format!(
                "--{}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n",
                self.boundary
            )
            .as_bytes(),
        );
        self
    }

    fn file(mut self, file_name: &str, content_type: &str, bytes: &[u8]) -> Self {
        self.body.extend_from_slice(
            format!(
                "--{}\r\nContent-Disposition: form-data; name=\"photos\"; filename=\"{file_name}\"\r\nContent-Type: {content_type}\r\n\r\n",
                self.boundary
            )
            .as_bytes(),
        );
        self.body.extend_from_slice(bytes);
        self.body.extend_from_slice(b"\r\n");
        self
    }

    /// The listing's fields after the CSRF token (the form's order).
    fn listing(self, token: &str, title: &str) -> Self {
        self.text("csrf_token", token)
            .text("title", title)
            .text("description", "Bright rooms, quiet street.")
            .text("price", "325000")
            .text("location", "Lisbon")
    }

    async fn post(mut self, app: &TestApp, path: &str) -> reqwest::Response {
        self.body
            .extend_from_slice(format!("--{}--\r\n", self.boundary).as_bytes());
        app.client
            .post(app.url(path))
            .header(
                "content-type",
                format!("multipart/form-data; boundary={}", self.boundary),
            )
            .body(self.body)
            .timeout(std::time::Duration::from_secs(60))
            .send()
            .await
            .expect("request sent")
    }
}

async fn signed_in_app() -> (TestApp, String) {
    let app = spawn_app().await;
    app.sign_in().await;
    let token = app.csrf_token("/admin/properties/new").await;
    (app, token)
}

/// (photo rows, link rows).
fn photo_counts(app: &TestApp) -> (i64, i64) {
    photo::counts(&mut app.db()).expect("counts")
}

fn newest_listing(app: &TestApp) -> i64 {
    properties::table
        .select(properties::id)
        .order(properties::id.desc())
        .first(&mut app.db())
        .expect("a listing")
}

/// The link ids of a listing, cover first then by position.
fn link_ids(app: &TestApp, id: i64) -> Vec<i64> {
    photo::of_listing(&mut app.db(), id)
        .expect("photos")
        .into_iter()
        .map(|p| p.id)
        .collect()
}

fn stored_pages(app: &TestApp) -> Vec<(Vec<u8>, Vec<u8>, i32, i32)> {
    photos::table
        .select((
            photos::card,
            photos::page,
            photos::page_width,
            photos::page_height,
        ))
        .load(&mut app.db())
        .expect("photos")
}

fn media_urls(html: &str) -> Vec<String> {
    html.match_indices("/media/")
        .map(|(i, _)| {
            let end = html[i..].find(['"', ' ']).expect("end of url") + i;
            html[i..end].to_string()
        })
        .collect()
}

// ---------- uploads ----------

#[tokio::test]
async fn jpeg_png_and_webp_uploads_are_re_encoded_stored_and_shown() {
    let (app, token) = signed_in_app().await;

    let res = Form::new()
        .listing(&token, "Three photos")
        .file("a.jpg", "image/jpeg", &jpeg(2000, 1000, 1))
        .file("b.png", "image/png", &png(640, 480, 2))
        .file(
            "c.webp",
            "image/webp",
            &picture(300, 200, 3, ImageFormat::WebP),
        )
        .post(&app, "/admin/properties/new")
        .await;

    assert_eq!(res.status(), 303, "{}", res.text().await.unwrap());
    let id = newest_listing(&app);
    assert_eq!(photo_counts(&app), (3, 3));
    let html = app.get_anonymous(&format!("/properties/{id}/")).await;
    let html = html.text().await.unwrap();
    let urls = media_urls(&html);
    assert!(urls.len() >= 3, "{urls:?}");
    let first = media_urls(&html)
        .into_iter()
        .find(|u| u.ends_with("-1600.jpg"))
        .expect("the 2000-wide JPEG has a 1600-wide page size");
    let res = app.get_anonymous(&first).await;
    assert_eq!(header(&res, "content-type"), "image/jpeg");
    let bytes = res.bytes().await.unwrap();
    let decoded = image::load_from_memory_with_format(&bytes, ImageFormat::Jpeg).unwrap();
    assert_eq!((decoded.width(), decoded.height()), (1600, 800));
    assert!(html.contains("width=\"1600\" height=\"800\""), "{html}");
    let mut sizes: Vec<(i32, i32)> = stored_pages(&app).iter().map(|p| (p.2, p.3)).collect();
    sizes.sort();
    assert_eq!(sizes, [(300, 200), (640, 480), (1600, 800)]);
}

#[tokio::test]
async fn exif_gps_is_not_in_the_stored_photos() {
    let (app, token) = signed_in_app().await;
    let upload = jpeg_with_exif(800, 600, 1);
    assert!(upload.windows(6).any(|w| w == b"Exif\0\0"));

    let res = Form::new()
        .listing(&token, "Secret location")
        .file("gps.jpg", "image/jpeg", &upload)
        .post(&app, "/admin/properties/new")
        .await;

    assert_eq!(res.status(), 303);
    let stored = stored_pages(&app);
    assert_eq!(stored.len(), 1);
    for bytes in [&stored[0].0, &stored[0].1] {
        assert!(bytes.starts_with(&[0xFF, 0xD8]));
        assert!(!bytes.windows(4).any(|w| w == b"Exif"), "Exif kept");
        assert!(!bytes.windows(4).any(|w| w == b"II\x2a\x00"), "TIFF kept");
    }
}

#[tokio::test]
async fn the_exif_orientation_is_applied() {
    let (app, token) = signed_in_app().await;

    let res = Form::new()
        .listing(&token, "Taken sideways")
        .file("side.jpg", "image/jpeg", &jpeg_with_exif(200, 100, 6))
        .post(&app, "/admin/properties/new")
        .await;

    assert_eq!(res.status(), 303);
    let stored = stored_pages(&app);
    assert_eq!((stored[0].2, stored[0].3), (100, 200), "rotated upright");
    let page = image::load_from_memory(&stored[0].1).unwrap();
    assert_eq!((page.width(), page.height()), (100, 200));
}

/// Posts a new listing with `file`; asserts 422, the title kept, and nothing written.
async fn assert_refused(app: &TestApp, token: &str, file_name: &str, bytes: &[u8], why: &str) {
    let res = Form::new()
        .listing(token, "Kept title")
        .file("fine.png", "image/png", &png(50, 40, 9))
        .file(file_name, "image/jpeg", bytes)
        .post(app, "/admin/properties/new")
        .await;

    assert_eq!(res.status(), 422, "{file_name}");
    let html = res.text().await.unwrap();
    assert!(
        html.contains("value=\"Kept title\""),
        "{file_name}: values kept"
    );
    assert!(html.contains("325000") && html.contains("Lisbon"));
    assert!(html.contains(why), "{file_name}: {why:?} in the page");
    assert_eq!(app.count_rows(), 0, "{file_name}: no listing written");
    assert_eq!(photo_counts(app), (0, 0), "{file_name}: no photo written");
}

#[tokio::test]
async fn a_file_that_is_not_an_image_gets_the_form_again_and_writes_nothing() {
    let (app, token) = signed_in_app().await;
    assert_refused(
        &app,
        &token,
        "fake.jpg",
        b"<svg xmlns='http://www.w3.org/2000/svg'/>",
        "is not a JPEG, PNG or WebP image",
    )
    .await;
}

#[tokio::test]
async fn a_truncated_image_gets_the_form_again_and_writes_nothing() {
    let (app, token) = signed_in_app().await;
    let whole = png(400, 300, 4);
    assert_refused(
        &app,
        &token,
        "cut.png",
        &whole[..whole.len() / 2],
        "could not be read as an image",
    )
    .await;
}

#[tokio::test]
async fn a_file_over_10_mb_gets_the_form_again_and_writes_nothing() {
    let (app, token) = signed_in_app().await;
    let mut big = jpeg(64, 64, 5);
    big.resize(10 * 1024 * 1024 + 1, 0);
    assert_refused(&app, &token, "big.jpg", &big, "is larger than 10 MB").await;
}

#[tokio::test]
async fn an_image_over_40_megapixels_gets_the_form_again_and_writes_nothing() {
    let (app, token) = signed_in_app().await;
    let bomb = huge_png(8000, 5001);
    assert!(bomb.len() < 100_000, "{} bytes", bomb.len());
    assert_refused(
        &app,
        &token,
        "bomb.png",
        &bomb,
        "has more than 40 megapixels",
    )
    .await;
}

#[tokio::test]
async fn a_thirteenth_photo_is_refused_and_the_listing_is_left_as_it_was() {
    let (app, token) = signed_in_app().await;
    let mut form = Form::new().listing(&token, "Twelve photos");
    for i in 0..12 {
        form = form.file(&format!("{i}.png"), "image/png", &png(40, 30, i));
    }
    assert_eq!(form.post(&app, "/admin/properties/new").await.status(), 303);
    let id = newest_listing(&app);
    assert_eq!(photo_counts(&app), (12, 12));

    let res = Form::new()
        .listing(&token, "Renamed with a thirteenth")
        .file("13.png", "image/png", &png(40, 30, 13))
        .post(&app, &format!("/admin/properties/{id}/edit"))
        .await;

    assert_eq!(res.status(), 422);
    let html = res.text().await.unwrap();
    assert!(html.contains("value=\"Renamed with a thirteenth\""));
    assert!(html.contains("at most 12 photos"), "{html}");
    assert_eq!(photo_counts(&app), (12, 12), "no photo written");
    let title: String = properties::table
        .find(id)
        .select(properties::title)
        .first(&mut app.db())
        .unwrap();
    assert_eq!(title, "Twelve photos", "the listing is not half-changed");
}

#[tokio::test]
async fn thirteen_photos_in_one_new_listing_are_refused() {
    let (app, token) = signed_in_app().await;
    let mut form = Form::new().listing(&token, "Too many");
    for i in 0..13 {
        form = form.file(&format!("{i}.png"), "image/png", &png(40, 30, i));
    }

    let res = form.post(&app, "/admin/properties/new").await;

    assert_eq!(res.status(), 422);
    assert_eq!(app.count_rows(), 0);
    assert_eq!(photo_counts(&app), (0, 0));
}

#[tokio::test]
async fn a_file_before_the_csrf_token_is_refused_undecoded() {
    let (app, token) = signed_in_app().await;

    let res = Form::new()
        .file("a.png", "image/png", &png(40, 30, 1))
        .listing(&token, "Token last")
        .post(&app, "/admin/properties/new")
        .await;

    assert_eq!(res.status(), 403);
    assert_eq!(app.count_rows(), 0);
    assert_eq!(photo_counts(&app), (0, 0));
}

#[tokio::test]
async fn photos_can_be_removed_and_another_made_the_cover() {
    let (app, token) = signed_in_app().await;
    let res = Form::new()
        .listing(&token, "Three to two")
        .file("1.png", "image/png", &png(60, 40, 1))
        .file("2.png", "image/png", &png(60, 40, 2))
        .file("3.png", "image/png", &png(60, 40, 3))
        .post(&app, "/admin/properties/new")
        .await;
    assert_eq!(res.status(), 303);
    let id = newest_listing(&app);
    let links = link_ids(&app, id);
    assert_eq!(links.len(), 3);
    let edit = app
        .get(&format!("/admin/properties/{id}/edit"))
        .await
        .text()
        .await
        .unwrap();
    assert!(edit.contains(&format!("name=\"remove_photo\" value=\"{}\"", links[1])));
    assert!(edit.contains(&format!(
        "name=\"cover_photo\" value=\"{}\" checked",
        links[0]
    )));

    let res = Form::new()
        .listing(&token, "Three to two")
        .text("remove_photo", &links[0].to_string())
        .text("cover_photo", &links[2].to_string())
        .post(&app, &format!("/admin/properties/{id}/edit"))
        .await;

    assert_eq!(res.status(), 303);
    assert_eq!(link_ids(&app, id), [links[2], links[1]], "new cover first");
    let json = app.get_json(&format!("/api/properties/{id}/")).await;
    let photos = json["photos"].as_array().unwrap();
    assert_eq!(photos.len(), 2);
    let cover = &photo::of_listing(&mut app.db(), id).unwrap()[0];
    assert_eq!(photos[0]["url"], cover.page_url());
    assert_eq!(photos[0]["width"], 60);
    assert_eq!(photos[0]["height"], 40);
    let list = app.get_json("/api/properties/").await;
    assert_eq!(list["results"][0]["photos"][0]["url"], cover.page_url());
}

#[tokio::test]
async fn removing_a_photo_of_another_listing_is_refused() {
    let (app, token) = signed_in_app().await;
    for title in ["First", "Second"] {
        let res = Form::new()
            .listing(&token, title)
            .file("1.png", "image/png", &png(60, 40, title.len() as u8))
            .post(&app, "/admin/properties/new")
            .await;
        assert_eq!(res.status(), 303);
    }
    let second = newest_listing(&app);
    let first_link = link_ids(&app, second - 1)[0];

    let res = Form::new()
        .listing(&token, "Second")
        .text("remove_photo", &first_link.to_string())
        .post(&app, &format!("/admin/properties/{second}/edit"))
        .await;

    assert_eq!(res.status(), 422);
    assert_eq!(photo_counts(&app), (2, 2));
}

#[tokio::test]
async fn the_same_file_uploaded_twice_is_stored_once() {
    let (app, token) = signed_in_app().await;
    let same = jpeg(900, 600, 7);

    for title in ["One", "Two"] {
        let res = Form::new()
            .listing(&token, title)
            .file("same.jpg", "image/jpeg", &same)
            .post(&app, "/admin/properties/new")
            .await;
        assert_eq!(res.status(), 303);
    }

    assert_eq!(photo_counts(&app), (1, 2));
    let hashes: Vec<String> = property_photos::table
        .select(property_photos::photo_hash)
        .load(&mut app.db())
        .unwrap();
    assert_eq!(hashes[0], hashes[1]);
}

// ---------- /media/ ----------

async fn one_photo(app: &TestApp, token: &str) -> photo::ListingPhoto {
    let res = Form::new()
        .listing(token, "Media")
        .file("m.jpg", "image/jpeg", &jpeg(1000, 500, 3))
        .post(app, "/admin/properties/new")
        .await;
    assert_eq!(res.status(), 303);
    photo::of_listing(&mut app.db(), newest_listing(app)).unwrap()[0].clone()
}

#[tokio::test]
async fn media_is_immutable_with_an_etag_and_answers_a_match_with_304() {
    let (app, token) = signed_in_app().await;
    let p = one_photo(&app, &token).await;

    for (url, width) in [(p.card_url(), 480), (p.page_url(), 1000)] {
        let res = app.get_anonymous(&url).await;
        assert_eq!(res.status(), 200, "{url}");
        assert_eq!(
            header(&res, "cache-control"),
            "public, max-age=31536000, immutable"
        );
        assert_eq!(header(&res, "content-type"), "image/jpeg");
        let etag = header(&res, "etag").to_string();
        assert!(etag.starts_with('"') && etag.contains(&p.hash), "{etag}");
        let body = res.bytes().await.unwrap();
        assert_eq!(image::load_from_memory(&body).unwrap().width(), width);
        // Again, now from memory: the same bytes and headers, the security headers too.
        let from_memory = app.get_anonymous(&url).await;
        assert_eq!(from_memory.status(), 200);
        assert_eq!(header(&from_memory, "etag"), etag);
        assert_eq!(header(&from_memory, "x-content-type-options"), "nosniff");
        assert_eq!(
            header(&from_memory, "cache-control"),
            "public, max-age=31536000, immutable"
        );
        assert_eq!(from_memory.bytes().await.unwrap(), body);

        let again = app
            .new_visitor()
            .get_with(&url, &[("if-none-match", &etag)])
            .await;
        assert_eq!(again.status(), 304, "{url}");
        assert_eq!(header(&again, "etag"), etag);
        assert!(again.bytes().await.unwrap().is_empty());
    }
}

#[tokio::test]
async fn a_photo_answered_from_memory_gets_hsts_like_every_response() {
    let app = crate::helpers::spawn_app_with(|s| {
        s.cookie_secure = property_listings::config::CookieSecure::Always;
    })
    .await;
    app.sign_in().await;
    let token = app.csrf_token("/admin/properties/new").await;
    let url = one_photo(&app, &token).await.card_url();
    for read in ["from PostgreSQL", "from memory"] {
        let res = app.get_anonymous(&url).await;
        assert_eq!(res.status(), 200, "{read}");
        assert!(
            header(&res, "strict-transport-security").starts_with("max-age="),
            "{read}"
        );
    }
}

#[tokio::test]
async fn any_other_media_name_is_404() {
    let (app, token) = signed_in_app().await;
    let p = one_photo(&app, &token).await;
    let other_hash = "0".repeat(64);

    for url in [
        format!("/media/{}-480.jpg", other_hash),
        format!("/media/{}-481.jpg", p.hash),
        format!("/media/{}-480.png", p.hash),
        format!("/media/{}-0480.jpg", p.hash),
        format!("/media/{}-480.jpg", p.hash.to_uppercase()),
        format!("/media/{}-480.jpg", &p.hash[..63]),
        "/media/".to_string(),
        "/media/x".to_string(),
    ] {
        assert_eq!(app.get_anonymous(&url).await.status(), 404, "{url}");
    }
    assert_eq!(app.get_anonymous(&p.card_url()).await.status(), 200);
}

// ---------- pages ----------

#[tokio::test]
async fn cached_pages_show_a_new_photo_at_once() {
    let (app, token) = signed_in_app().await;
    let listing = app.insert("No photo yet", "100000", "Porto").await;
    let routes = public_routes(listing.id);
    app.warm(&routes).await;
    let detail = app.get_anonymous(&routes[1]).await.text().await.unwrap();
    assert!(!detail.contains("/media/") && detail.contains("placeholder"));

    let res = Form::new()
        .listing(&token, "No photo yet")
        .file("new.png", "image/png", &png(600, 400, 5))
        .post(&app, &format!("/admin/properties/{}/edit", listing.id))
        .await;
    assert_eq!(res.status(), 303);

    let p = &photo::of_listing(&mut app.db(), listing.id).unwrap()[0];
    for route in &routes {
        let body = app.get_anonymous(route).await.text().await.unwrap();
        assert!(body.contains("/media/"), "{route} shows the photo at once");
    }
    let list = app
        .get_anonymous("/properties/")
        .await
        .text()
        .await
        .unwrap();
    assert!(list.contains(&format!(
        "src=\"{}\" width=\"480\" height=\"320\"",
        p.card_url()
    )));
    let detail = app.get_anonymous(&routes[1]).await.text().await.unwrap();
    assert!(detail.contains(&format!("src=\"{}\"", p.page_url())));
    assert!(!detail.contains("placeholder-large"));
}

#[tokio::test]
async fn detail_photos_past_the_first_load_lazily() {
    let (app, token) = signed_in_app().await;
    let res = Form::new()
        .listing(&token, "Gallery")
        .file("1.png", "image/png", &png(60, 40, 1))
        .file("2.png", "image/png", &png(60, 40, 2))
        .post(&app, "/admin/properties/new")
        .await;
    assert_eq!(res.status(), 303);
    let id = newest_listing(&app);

    let html = app
        .get_anonymous(&format!("/properties/{id}/"))
        .await
        .text()
        .await
        .unwrap();

    let imgs: Vec<&str> = html.split("<img ").skip(1).collect();
    assert_eq!(imgs.len(), 2);
    assert!(
        !imgs[0]
            .split('>')
            .next()
            .unwrap()
            .contains("loading=\"lazy\"")
    );
    assert!(
        imgs[1]
            .split('>')
            .next()
            .unwrap()
            .contains("loading=\"lazy\"")
    );
    for img in imgs {
        assert!(img.contains("alt=\"Photo ") && img.contains("width=\"60\""));
    }
}

#[tokio::test]
async fn deleting_a_listing_removes_its_photo_links_but_not_shared_photos() {
    let (app, token) = signed_in_app().await;
    let shared = png(60, 40, 1);
    for title in ["Kept", "Deleted"] {
        let res = Form::new()
            .listing(&token, title)
            .file("shared.png", "image/png", &shared)
            .post(&app, "/admin/properties/new")
            .await;
        assert_eq!(res.status(), 303);
    }
    let deleted = newest_listing(&app);
    let kept = deleted - 1;

    let res = app
        .post_form(
            &format!("/admin/properties/{deleted}/delete"),
            &[("csrf_token", &token)],
        )
        .await;

    assert_eq!(res.status(), 303);
    assert_eq!(photo_counts(&app), (1, 1));
    let cover = &photo::of_listing(&mut app.db(), kept).unwrap()[0];
    assert_eq!(app.get_anonymous(&cover.card_url()).await.status(), 200);
}

#[tokio::test]
async fn removing_the_cover_with_its_choice_still_ticked_makes_the_next_photo_the_cover() {
    let (app, token) = signed_in_app().await;
    let res = Form::new()
        .listing(&token, "Cover goes")
        .file("1.png", "image/png", &png(60, 40, 1))
        .file("2.png", "image/png", &png(60, 40, 2))
        .post(&app, "/admin/properties/new")
        .await;
    assert_eq!(res.status(), 303);
    let id = newest_listing(&app);
    let links = link_ids(&app, id);

    // What the browser sends when only the cover's Remove box is ticked.
    let res = Form::new()
        .listing(&token, "Cover goes")
        .text("cover_photo", &links[0].to_string())
        .text("remove_photo", &links[0].to_string())
        .post(&app, &format!("/admin/properties/{id}/edit"))
        .await;

    assert_eq!(res.status(), 303);
    let left = photo::of_listing(&mut app.db(), id).unwrap();
    assert_eq!(left.len(), 1);
    assert!(left[0].cover && left[0].id == links[1]);
}

#[tokio::test]
async fn a_form_with_photos_sent_while_the_database_is_down_comes_back_with_its_values() {
    let (app, token) = signed_in_app().await;
    app.drop_database();

    let res = Form::new()
        .listing(&token, "Sent during an outage")
        .file("a.png", "image/png", &png(60, 40, 1))
        .post(&app, "/admin/properties/new")
        .await;

    assert_eq!(res.status(), 503);
    let html = res.text().await.unwrap();
    assert!(html.contains("value=\"Sent during an outage\""));
    assert!(html.contains("nothing was saved"));
}

/// A photo change is a write like any other: with the replica's replay paused, the
/// refills of the listing's pages read the primary (rows and photos alike), so the new
/// photo shows at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_photo_added_while_the_replica_lags_shows_at_once() {
    let set = crate::helpers::postgres::PgReplicaSet::start(1);
    let app = crate::helpers::postgres::spawn_app_on_replicas(&set, |_| {}).await;
    app.sign_in().await;
    let token = app.csrf_token("/admin/properties/new").await;
    let listing = app.insert("No photo yet", "100000", "Porto").await;
    let routes = public_routes(listing.id);
    set.wait_replayed(0, set.primary_lsn());
    app.warm(&routes).await;

    set.pause_replay(0);
    let res = Form::new()
        .listing(&token, "No photo yet")
        .file("new.png", "image/png", &png(600, 400, 9))
        .post(&app, &format!("/admin/properties/{}/edit", listing.id))
        .await;
    assert_eq!(res.status(), 303);
    let (_, replica_reads) = app.state.replicas.reads();
    for route in &routes {
        let body = app.get_anonymous(route).await.text().await.unwrap();
        assert!(body.contains("/media/"), "{route} shows the photo at once");
    }
    assert_eq!(
        app.state.replicas.reads().1,
        replica_reads,
        "no refill read the lagging replica"
    );
    set.resume_replay(0);
}
