//! A JSON response written straight from its DTOs by serde, for the large answers (the
//! instance list). poem-openapi's `Json` first builds a `serde_json::Value` of the whole
//! document (a map per object, a copy of every string) and then prints it; over 1,000
//! instances that cost more than the query (issue 17, item 5). This one prints the DTOs
//! directly; its content type and its schema in the spec are `Json`'s.

use std::marker::PhantomData;

use poem::{IntoResponse, Response};
use poem_openapi::payload::Payload;
use poem_openapi::registry::{MetaMediaType, MetaResponse, MetaResponses, MetaSchemaRef, Registry};
use poem_openapi::types::Type;
use poem_openapi::{ApiResponse, types::ToJSON};
use serde::Serialize;

use crate::error::AppError;

/// `T`, already printed as JSON. `T` derives both poem-openapi's `Object` (the schema)
/// and serde's `Serialize` (the bytes); a test per DTO holds the two to the same document.
pub struct SerdeJson<T> {
    body: Vec<u8>,
    _schema: PhantomData<fn() -> T>,
}

impl<T: Serialize> SerdeJson<T> {
    pub fn new(value: &T) -> Result<Self, AppError> {
        let body = serde_json::to_vec(value).map_err(|e| AppError::internal(format!("printing the answer: {e}")))?;
        Ok(SerdeJson { body, _schema: PhantomData })
    }
}

impl<T: Type> Payload for SerdeJson<T> {
    const CONTENT_TYPE: &'static str = "application/json; charset=utf-8";

    fn schema_ref() -> MetaSchemaRef {
        T::schema_ref()
    }

    fn register(registry: &mut Registry) {
        T::register(registry);
    }
}

impl<T: Type> IntoResponse for SerdeJson<T> {
    fn into_response(self) -> Response {
        Response::builder().content_type(<Self as Payload>::CONTENT_TYPE).body(self.body)
    }
}

impl<T: Type + ToJSON> ApiResponse for SerdeJson<T> {
    fn meta() -> MetaResponses {
        MetaResponses {
            responses: vec![MetaResponse {
                description: "",
                status: Some(200),
                status_range: None,
                content: vec![MetaMediaType {
                    content_type: <Self as Payload>::CONTENT_TYPE,
                    schema: <Self as Payload>::schema_ref(),
                }],
                headers: vec![],
            }],
        }
    }

    fn register(registry: &mut Registry) {
        T::register(registry);
    }
}
