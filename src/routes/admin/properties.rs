//! The listing forms: create, edit, delete-with-confirmation, and the admin list. Input
//! is parsed into domain types; invalid input comes back as 422 with every value kept and
//! one message per bad field; nothing is written unless everything is valid. Writes go
//! through the repository, so the cache hooks run as for any other writer. The create
//! and edit forms carry photos (`upload` reads them); a listing and its photo changes
//! are written in one transaction.

use actix_session::Session;
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use serde::Deserialize;

use super::upload::{self, PropertyForm, Submission};
use super::{admin_page, see_other};
use crate::auth::{self, Admin};
use crate::domain::{Description, Location, Money, Price, Title};
use crate::error::AppError;
use crate::models::photo::{MAX_PHOTOS_PER_LISTING, PhotoChanges};
use crate::models::property::{Property, PropertyData, PropertyFilter, Sort};
use crate::models::repository::Saved;
use crate::routes::properties::parse_id;
use crate::state::AppState;

const ADMIN_PAGE_SIZE: usize = 50;
const DB_DOWN: &str =
    "The database is not reachable right now, so nothing was saved. Please try again in a moment.";

/// One message per bad field.
#[derive(Clone, Debug, Default)]
pub struct FieldErrors {
    pub title: Option<String>,
    pub description: Option<String>,
    pub price: Option<String>,
    pub location: Option<String>,
    /// Every refused file or photo choice, one sentence each.
    pub photos: Option<String>,
}

impl TryFrom<&PropertyForm> for PropertyData {
    type Error = FieldErrors;

    fn try_from(form: &PropertyForm) -> Result<Self, FieldErrors> {
        let title = Title::parse(&form.title);
        let description = Description::parse(&form.description);
        let price = Price::parse(&form.price);
        let location = Location::parse(&form.location);
        match (title, description, price, location) {
            (Ok(t), Ok(d), Ok(p), Ok(l)) => Ok(PropertyData::new(t, d, p, l)),
            (t, d, p, l) => Err(FieldErrors {
                title: t.err(),
                description: d.err(),
                price: p.err(),
                location: l.err(),
                photos: None,
            }),
        }
    }
}

#[derive(Template)]
#[template(path = "admin/form.html")]
pub struct FormPage {
    pub admin_name: String,
    pub csrf_token: String,
    pub heading: String,
    pub action: String,
    pub submit_label: &'static str,
    pub values: PropertyForm,
    pub errors: FieldErrors,
    pub form_error: Option<String>,
    /// The listing's photos (edit form), with the remove/cover choices shown.
    pub photos: Vec<FormPhoto>,
    pub max_photos: usize,
}

/// A photo on the edit form.
pub struct FormPhoto {
    pub id: i64,
    pub url: String,
    pub width: i32,
    pub height: i32,
    pub number: usize,
    pub cover: bool,
    pub remove: bool,
}

/// The photos of listing `id` as the edit form shows them: the cover ticked as
/// `cover` says (else the current one), the removals in `remove` ticked.
async fn form_photos(
    state: &AppState,
    id: Option<i64>,
    remove: &[String],
    cover: Option<&str>,
) -> Vec<FormPhoto> {
    let Some(id) = id else { return Vec::new() };
    let photos = match state.properties.photos_of(vec![id]).await {
        Ok(mut by_listing) => by_listing.remove(&id).unwrap_or_default(),
        Err(e) => {
            log::warn!("listing {id}'s photos not shown on its form: {e}");
            return Vec::new();
        }
    };
    photos
        .into_iter()
        .enumerate()
        .map(|(i, p)| {
            let id_text = p.id.to_string();
            FormPhoto {
                id: p.id,
                url: p.card_url(),
                width: p.card_width,
                height: p.card_height,
                number: i + 1,
                cover: cover.map_or(p.cover, |c| c == id_text),
                remove: remove.contains(&id_text),
            }
        })
        .collect()
}

pub struct AdminRow {
    pub id: i64,
    pub title: String,
    pub price: Money,
    pub location: String,
    pub created_date: String,
    pub url: String,
}

#[derive(Template)]
#[template(path = "admin/index.html")]
pub struct IndexPage {
    pub admin_name: String,
    pub csrf_token: String,
    pub flash: Option<String>,
    pub rows: Vec<AdminRow>,
    pub count: i64,
    pub page: u32,
    pub num_pages: u32,
    pub prev_url: Option<String>,
    pub next_url: Option<String>,
}

#[derive(Template)]
#[template(path = "admin/delete.html")]
pub struct DeletePage {
    pub admin_name: String,
    pub csrf_token: String,
    pub row: AdminRow,
    pub form_error: Option<String>,
}

fn row(p: &Property) -> AdminRow {
    AdminRow {
        id: p.id,
        title: p.title.clone(),
        price: p.price().display(),
        location: p.location.clone(),
        created_date: p.created_at.format("%-d %b %Y %H:%M").to_string(),
        url: format!("/properties/{}/", p.id),
    }
}

#[derive(Deserialize)]
pub struct PageQuery {
    page: Option<String>,
}

pub async fn index(
    admin: Admin,
    session: Session,
    state: web::Data<AppState>,
    query: web::Query<PageQuery>,
) -> Result<HttpResponse, AppError> {
    let page = match query.page.as_deref().filter(|p| !p.is_empty()) {
        None => 1,
        Some(p) => p
            .parse::<usize>()
            .ok()
            .filter(|n| *n >= 1 && *n <= 1_000_000)
            .ok_or_else(|| AppError::bad_param("page", "a page number from 1 up"))?,
    };
    let (rows, count) = state
        .properties
        .list(
            PropertyFilter::default(),
            Sort::Newest,
            ADMIN_PAGE_SIZE as i64,
            ((page - 1) * ADMIN_PAGE_SIZE) as i64,
        )
        .await?;
    let num_pages = (count.max(0) as usize).div_ceil(ADMIN_PAGE_SIZE).max(1);
    if page > num_pages {
        return Err(AppError::NotFound);
    }
    let url = |n: usize| format!("/admin/?page={n}");
    admin_page(
        StatusCode::OK,
        &IndexPage {
            admin_name: admin.username,
            csrf_token: auth::csrf_token(&session)?,
            flash: auth::take_flash(&session),
            rows: rows.iter().map(row).collect(),
            count,
            page: page as u32,
            num_pages: num_pages as u32,
            prev_url: (page > 1).then(|| url(page - 1)),
            next_url: (page < num_pages).then(|| url(page + 1)),
        },
    )
}

fn form_page(
    admin: &Admin,
    session: &Session,
    id: Option<i64>,
    values: PropertyForm,
    errors: FieldErrors,
    form_error: Option<String>,
    photos: Vec<FormPhoto>,
) -> Result<FormPage, AppError> {
    let (heading, action, submit_label) = match id {
        None => (
            "New listing".to_string(),
            "/admin/properties/new".to_string(),
            "Create listing",
        ),
        Some(id) => (
            format!("Edit listing #{id}"),
            format!("/admin/properties/{id}/edit"),
            "Save changes",
        ),
    };
    Ok(FormPage {
        admin_name: admin.username.clone(),
        csrf_token: auth::csrf_token(session)?,
        heading,
        action,
        submit_label,
        values,
        errors,
        form_error,
        photos,
        max_photos: MAX_PHOTOS_PER_LISTING,
    })
}

pub async fn new_form(admin: Admin, session: Session) -> Result<HttpResponse, AppError> {
    let page = form_page(
        &admin,
        &session,
        None,
        PropertyForm::default(),
        FieldErrors::default(),
        None,
        Vec::new(),
    )?;
    admin_page(StatusCode::OK, &page)
}

/// Who submits a form: a signed-in admin, or — when PostgreSQL could not even confirm
/// the session — the admin the session claims (nothing will be attempted then: the form
/// comes back with its values).
enum Submitter {
    Admin(Admin),
    DatabaseDown(Admin, String),
}

fn submitter(admin: Result<Admin, AppError>, session: &Session) -> Result<Submitter, AppError> {
    match (admin, auth::current_admin(session)) {
        (Ok(admin), _) => Ok(Submitter::Admin(admin)),
        (Err(AppError::Unavailable(cause)), Some(claimed)) => {
            Ok(Submitter::DatabaseDown(claimed, cause))
        }
        (Err(e), _) => Err(e),
    }
}

/// Reads (checking the CSRF token), validates and writes a submitted form (insert when
/// `id` is `None`): the listing and its photo changes in one transaction, or nothing.
async fn save(
    admin: Result<Admin, AppError>,
    session: Session,
    state: web::Data<AppState>,
    id: Option<i64>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, actix_web::Error> {
    let who = submitter(admin, &session)?;
    let process_files = matches!(who, Submitter::Admin(_));
    let sub = upload::read(&req, payload, &session, &state, process_files).await?;
    let admin = match who {
        Submitter::Admin(admin) => admin,
        Submitter::DatabaseDown(claimed, cause) => {
            return Ok(db_down(&claimed, &session, id, sub.form, &cause)?);
        }
    };
    let data = PropertyData::try_from(&sub.form);
    let mut errors = data.as_ref().err().cloned().unwrap_or_default();
    if !sub.photo_errors.is_empty() {
        errors.photos = Some(sub.photo_errors.join(" "));
    }
    let data = match data {
        Ok(data) if errors.photos.is_none() => data,
        _ => return Ok(invalid(&admin, &session, &state, id, sub, errors).await?),
    };
    let changes = PhotoChanges {
        remove: sub.remove_ids(),
        cover: sub.cover_id(),
        add: sub.photos.clone(),
    };
    let written = match id {
        None => state.properties.insert_with_photos(data, changes).await,
        Some(id) => state.properties.update_with_photos(id, data, changes).await,
    };
    match written {
        Ok(Saved::Written(p)) => {
            let verb = if id.is_none() { "created" } else { "saved" };
            auth::set_flash(&session, &format!("Listing “{}” {verb}.", p.title));
            log::info!("admin {:?} {verb} property {}", admin.username, p.id);
            Ok(see_other("/admin/"))
        }
        Ok(Saved::NotFound) => Err(AppError::NotFound.into()),
        Ok(Saved::Refused(why)) => {
            errors.photos = Some(upload::capitalised(&why.to_string()));
            Ok(invalid(&admin, &session, &state, id, sub, errors).await?)
        }
        Err(AppError::Unavailable(cause)) => Ok(db_down(&admin, &session, id, sub.form, &cause)?),
        Err(e) => Err(e.into()),
    }
}

/// The form again with 422: every value kept (the photo choices too; files cannot be
/// put back into a file field), one message per bad field, nothing written.
async fn invalid(
    admin: &Admin,
    session: &Session,
    state: &AppState,
    id: Option<i64>,
    sub: Submission,
    errors: FieldErrors,
) -> Result<HttpResponse, AppError> {
    let photos = form_photos(state, id, &sub.remove_raw, sub.cover_raw.as_deref()).await;
    let page = form_page(
        admin,
        session,
        id,
        sub.form,
        errors,
        Some("Please correct the fields marked below; nothing was saved.".into()),
        photos,
    )?;
    admin_page(StatusCode::UNPROCESSABLE_ENTITY, &page)
}

/// The form again with its values and a message: 503, nothing saved.
fn db_down(
    admin: &Admin,
    session: &Session,
    id: Option<i64>,
    form: PropertyForm,
    cause: &str,
) -> Result<HttpResponse, AppError> {
    log::warn!("form not saved, database unavailable: {cause}");
    let page = form_page(
        admin,
        session,
        id,
        form,
        FieldErrors::default(),
        Some(DB_DOWN.into()),
        Vec::new(),
    )?;
    admin_page(StatusCode::SERVICE_UNAVAILABLE, &page)
}

pub async fn create(
    admin: Result<Admin, AppError>,
    session: Session,
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, actix_web::Error> {
    save(admin, session, state, None, req, payload).await
}

async fn load(state: &AppState, id: i64) -> Result<Property, AppError> {
    state.properties.get(id).await?.ok_or(AppError::NotFound)
}

pub async fn edit_form(
    admin: Admin,
    session: Session,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let id = parse_id(&path)?;
    let property = load(&state, id).await?;
    let photos = form_photos(&state, Some(id), &[], None).await;
    let page = form_page(
        &admin,
        &session,
        Some(id),
        PropertyForm::from_property(&property),
        FieldErrors::default(),
        None,
        photos,
    )?;
    admin_page(StatusCode::OK, &page)
}

pub async fn update(
    admin: Result<Admin, AppError>,
    session: Session,
    state: web::Data<AppState>,
    path: web::Path<String>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, actix_web::Error> {
    let id = parse_id(&path)?;
    save(admin, session, state, Some(id), req, payload).await
}

pub async fn delete_form(
    admin: Admin,
    session: Session,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let id = parse_id(&path)?;
    let property = load(&state, id).await?;
    admin_page(
        StatusCode::OK,
        &DeletePage {
            admin_name: admin.username,
            csrf_token: auth::csrf_token(&session)?,
            row: row(&property),
            form_error: None,
        },
    )
}

#[derive(Deserialize)]
pub struct DeleteForm {
    #[serde(default)]
    csrf_token: String,
}

pub async fn delete(
    admin: Admin,
    session: Session,
    state: web::Data<AppState>,
    path: web::Path<String>,
    form: web::Form<DeleteForm>,
) -> Result<HttpResponse, AppError> {
    auth::check_csrf(&session, &form.csrf_token)?;
    let id = parse_id(&path)?;
    match state.properties.delete(id).await {
        Ok(Some(p)) => {
            auth::set_flash(&session, &format!("Listing “{}” deleted.", p.title));
            log::info!("admin {:?} deleted property {}", admin.username, p.id);
            Ok(see_other("/admin/"))
        }
        Ok(None) => Err(AppError::NotFound),
        Err(e) => Err(e),
    }
}
