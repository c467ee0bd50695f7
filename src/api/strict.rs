//! Request fields that take a JSON string and nothing else. poem-openapi's `String`
//! turns `7` and `true` into "7" and "true", which would store a value the caller never
//! wrote (`"name": true` as a name). `Text` refuses them, so the request gets 400,
//! and names the field (poem-openapi's own message does not), through a marker type:
//! `Text<field::Name>`. `Integer` does the same for whole numbers (`"80"` and `80.5` are
//! refused), so that a port missing or mistyped is named in the answer.

use std::borrow::Cow;
use std::marker::PhantomData;

use poem_openapi::registry::{MetaSchema, MetaSchemaRef};
use poem_openapi::types::{ParseError, ParseFromJSON, ParseResult, ToJSON, Type};
use serde_json::Value;

/// The JSON name of a request field, for error messages.
pub trait FieldName: Send + Sync + 'static {
    const NAME: &'static str;
}

/// Marker types, one per request field that takes text.
pub mod field {
    macro_rules! fields {
        ($($marker:ident = $name:literal),* $(,)?) => {
            $(
                pub struct $marker;
                impl super::FieldName for $marker {
                    const NAME: &'static str = $name;
                }
            )*
        };
    }
    fields!(
        InstanceType = "instance_type",
        ImageId = "image_id",
        Name = "name",
        KeyName = "key_name",
        UserData = "user_data",
        PublicKey = "public_key",
        PrivateKey = "private_key",
        FilePath = "file_path",
        Description = "description",
        Os = "os",
        OsVersion = "os_version",
        Architecture = "architecture",
        DefaultUser = "default_user",
        HostPort = "host_port",
        InstancePort = "instance_port",
    );
}

pub struct Text<F>(pub String, PhantomData<F>);

impl<F> Text<F> {
    pub fn new(text: impl Into<String>) -> Self {
        Text(text.into(), PhantomData)
    }
    pub fn into_string(self) -> String {
        self.0
    }
}

impl<F> std::fmt::Debug for Text<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl<F: FieldName> Type for Text<F> {
    const IS_REQUIRED: bool = true;
    type RawValueType = Self;
    type RawElementValueType = Self;

    fn name() -> Cow<'static, str> {
        "string".into()
    }

    fn schema_ref() -> MetaSchemaRef {
        MetaSchemaRef::Inline(Box::new(MetaSchema::new("string")))
    }

    fn as_raw_value(&self) -> Option<&Self::RawValueType> {
        Some(self)
    }

    fn raw_element_iter<'a>(&'a self) -> Box<dyn Iterator<Item = &'a Self::RawElementValueType> + 'a> {
        Box::new(self.as_raw_value().into_iter())
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<F: FieldName> ParseFromJSON for Text<F> {
    fn parse_from_json(value: Option<Value>) -> ParseResult<Self> {
        match value {
            Some(Value::String(text)) => Ok(Text::new(text)),
            Some(other) => Err(ParseError::custom(format!("{}: expected a string, found {}", F::NAME, kind(&other)))),
            None => Err(ParseError::custom(format!("{} is required", F::NAME))),
        }
    }
}

impl<F: FieldName> ToJSON for Text<F> {
    fn to_json(&self) -> Option<Value> {
        Some(Value::String(self.0.clone()))
    }
}

pub struct Integer<F>(pub i64, PhantomData<F>);

impl<F> Integer<F> {
    pub fn new(value: i64) -> Self {
        Integer(value, PhantomData)
    }
}

impl<F> std::fmt::Debug for Integer<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl<F: FieldName> Type for Integer<F> {
    const IS_REQUIRED: bool = true;
    type RawValueType = Self;
    type RawElementValueType = Self;

    fn name() -> Cow<'static, str> {
        "integer_int64".into()
    }

    fn schema_ref() -> MetaSchemaRef {
        MetaSchemaRef::Inline(Box::new(MetaSchema::new_with_format("integer", "int64")))
    }

    fn as_raw_value(&self) -> Option<&Self::RawValueType> {
        Some(self)
    }

    fn raw_element_iter<'a>(&'a self) -> Box<dyn Iterator<Item = &'a Self::RawElementValueType> + 'a> {
        Box::new(self.as_raw_value().into_iter())
    }
}

impl<F: FieldName> ParseFromJSON for Integer<F> {
    fn parse_from_json(value: Option<Value>) -> ParseResult<Self> {
        match value {
            Some(Value::Number(n)) => match n.as_i64() {
                Some(whole) => Ok(Integer::new(whole)),
                None => Err(ParseError::custom(format!("{}: expected a whole number, found {n}", F::NAME))),
            },
            Some(other) => Err(ParseError::custom(format!("{}: expected a number, found {}", F::NAME, kind(&other)))),
            None => Err(ParseError::custom(format!("{} is required", F::NAME))),
        }
    }
}

impl<F: FieldName> ToJSON for Integer<F> {
    fn to_json(&self) -> Option<Value> {
        Some(Value::from(self.0))
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_strings_are_text_and_the_field_is_named() {
        type Name = Text<field::Name>;
        assert_eq!(Name::parse_from_json(Some(Value::String("a".into()))).unwrap().0, "a");
        for (value, kind) in [
            (serde_json::json!(7), "a number"),
            (serde_json::json!(true), "a boolean"),
            (serde_json::json!([1]), "an array"),
            (serde_json::json!({}), "an object"),
        ] {
            let err = Name::parse_from_json(Some(value)).unwrap_err();
            assert!(err.message().ends_with(&format!("name: expected a string, found {kind}")), "{}", err.message());
        }
        assert!(Option::<Name>::parse_from_json(Some(Value::Null)).unwrap().is_none());
        assert!(Option::<Name>::parse_from_json(None).unwrap().is_none());
        assert!(Name::parse_from_json(None).unwrap_err().message().ends_with("name is required"));
    }

    #[test]
    fn only_whole_numbers_are_integers_and_the_field_is_named() {
        type Port = Integer<field::InstancePort>;
        assert_eq!(Port::parse_from_json(Some(serde_json::json!(80))).unwrap().0, 80);
        assert_eq!(Port::parse_from_json(Some(serde_json::json!(-1))).unwrap().0, -1);
        for (value, expected) in [
            (serde_json::json!("80"), "instance_port: expected a number, found a string"),
            (serde_json::json!(80.5), "instance_port: expected a whole number, found 80.5"),
            (serde_json::json!(null), "instance_port: expected a number, found null"),
        ] {
            let err = Port::parse_from_json(Some(value)).unwrap_err();
            assert!(err.message().ends_with(expected), "{}", err.message());
        }
        assert!(Port::parse_from_json(None).unwrap_err().message().ends_with("instance_port is required"));
        assert!(Option::<Port>::parse_from_json(Some(Value::Null)).unwrap().is_none());
    }
}
