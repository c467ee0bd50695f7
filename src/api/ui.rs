//! The web UI at / (REQ-USE-001): files embedded at build time (see build.rs).

use poem::http::header;
use poem::web::Path;
use poem::{Response, handler};

include!(concat!(env!("OUT_DIR"), "/ui_assets.rs"));

fn asset(name: &str) -> Option<Response> {
    ASSETS.iter().find(|(file, _, _)| *file == name).map(|(_, content_type, bytes)| {
        Response::builder()
            .header(header::CONTENT_TYPE, *content_type)
            .header(header::CACHE_CONTROL, "no-cache")
            .body(bytes.to_vec())
    })
}

#[handler]
pub fn index() -> Response {
    index_page()
}

pub fn index_page() -> Response {
    asset("index.html").expect("index.html is embedded")
}

#[handler]
pub fn assets(Path(name): Path<String>) -> Response {
    asset(&name).unwrap_or_else(|| super::error::HttpRefusal::NoSuchAsset(name).response())
}
