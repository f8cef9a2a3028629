//! The JSON API: the same listing query as the HTML list, and one property by id.

use actix_web::{HttpRequest, HttpResponse, web};
use serde::Serialize;

use super::list_query::ListQuery;
use super::listing::fetch_page;
use super::properties::load_property_with_photos;
use super::views::PropertyJson;
use crate::cache::page::BuiltFromStaleData;
use crate::error::ApiError;
use crate::state::AppState;

#[derive(Serialize)]
struct ListJson {
    count: usize,
    page: usize,
    num_pages: usize,
    results: Vec<PropertyJson>,
}

pub async fn list(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let query = ListQuery::parse(req.query_string())?;
    let result = fetch_page(&state, &query).await?;
    let mut res = HttpResponse::Ok().json(ListJson {
        count: result.count,
        page: result.page,
        num_pages: result.num_pages,
        results: result
            .rows()
            .into_iter()
            .map(|p| PropertyJson::new(p, result.photos(p.id)))
            .collect(),
    });
    if result.stale {
        res.extensions_mut().insert(BuiltFromStaleData);
    }
    Ok(res)
}

pub async fn detail(
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (property, photos) = load_property_with_photos(&state, &path).await?;
    Ok(HttpResponse::Ok().json(PropertyJson::new(&property, &photos)))
}
