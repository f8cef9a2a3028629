//! The public HTML pages: the listing grid with search, filters and pagination, and the
//! detail page. Both are page-cached by `cache::page`.

use actix_web::http::header::LOCATION;
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;

use super::list_query::{ListQuery, SearchForm};
use super::listing::fetch_page;
use super::views::PropertyView;
use crate::cache::page::BuiltFromStaleData;
use crate::error::{AppError, render_html};
use crate::models::photo::ListingPhoto;
use crate::models::property::{Property, Sort};
use crate::state::AppState;

pub struct SortOption {
    pub value: &'static str,
    pub label: &'static str,
    pub selected: bool,
}

pub struct PageLink {
    pub number: u32,
    pub url: String,
    pub current: bool,
}

#[derive(Template)]
#[template(path = "properties/list.html")]
pub struct ListPage<'a> {
    pub properties: Vec<PropertyView<'a>>,
    pub count: i64,
    pub page: u32,
    pub num_pages: u32,
    /// The search form's values: the list query's, in canonical spelling.
    pub filters: &'a SearchForm,
    pub sort_options: Vec<SortOption>,
    pub prev_url: Option<String>,
    pub next_url: Option<String>,
    pub page_links: Vec<PageLink>,
    pub filtered: bool,
}

#[derive(Template)]
#[template(path = "properties/detail.html")]
pub struct DetailPage<'a> {
    pub property: PropertyView<'a>,
}

pub async fn index() -> HttpResponse {
    redirect("/properties/")
}

pub fn redirect(to: &str) -> HttpResponse {
    HttpResponse::Found()
        .insert_header((LOCATION, to.to_string()))
        .finish()
}

pub async fn list(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, AppError> {
    let query = ListQuery::parse(req.query_string())?;
    let result = fetch_page(&state, &query).await?;
    let path = "/properties/";
    let first = result.page.saturating_sub(3).max(1);
    let last = (result.page + 3).min(result.num_pages);
    let page = ListPage {
        properties: result
            .rows()
            .into_iter()
            .map(|p| PropertyView::new(p, result.photos(p.id)))
            .collect(),
        count: result.count as i64,
        page: result.page as u32,
        num_pages: result.num_pages as u32,
        filters: &query.form,
        sort_options: Sort::ALL
            .iter()
            .map(|s| SortOption {
                value: s.as_str(),
                label: s.label(),
                selected: *s == query.sort,
            })
            .collect(),
        prev_url: (result.page > 1).then(|| query.url_for_page(path, result.page - 1)),
        next_url: (result.page < result.num_pages)
            .then(|| query.url_for_page(path, result.page + 1)),
        page_links: (first..=last)
            .map(|n| PageLink {
                number: n as u32,
                url: query.url_for_page(path, n),
                current: n == result.page,
            })
            .collect(),
        filtered: !query.filter.is_empty(),
    };
    let mut res = render_html(&page)?;
    if result.stale {
        res.extensions_mut().insert(BuiltFromStaleData);
    }
    Ok(res)
}

/// Parses a path id; anything but a positive integer is simply "not found".
pub fn parse_id(raw: &str) -> Result<i64, AppError> {
    crate::domain::parse_id(raw).ok_or(AppError::NotFound)
}

/// The property a detail route names (a database load behind the page cache).
pub async fn load_property(state: &AppState, raw_id: &str) -> Result<Property, AppError> {
    let id = parse_id(raw_id)?;
    state
        .cache
        .metrics()
        .db_load(crate::cache::metrics::Layer::Page);
    state.properties.get(id).await?.ok_or(AppError::NotFound)
}

/// `load_property` and the listing's photos, cover first.
pub async fn load_property_with_photos(
    state: &AppState,
    raw_id: &str,
) -> Result<(Property, Vec<ListingPhoto>), AppError> {
    let property = load_property(state, raw_id).await?;
    let id = property.id;
    let photos = state
        .properties
        .photos_of(vec![id])
        .await?
        .remove(&id)
        .unwrap_or_default();
    Ok((property, photos))
}

pub async fn detail(
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AppError> {
    let (property, photos) = load_property_with_photos(&state, &path).await?;
    render_html(&DetailPage {
        property: PropertyView::new(&property, &photos),
    })
}
