//! Writing EC2's XML: elements in the model's names, lists as `<xxxSet><item>…`, text
//! escaped by quick-xml. Optional values that are absent are left out entirely: the
//! SDKs cannot read an empty number, boolean or timestamp.

use quick_xml::Writer;
use quick_xml::events::{BytesDecl, BytesEnd, BytesStart, BytesText, Event};

pub const NAMESPACE: &str = "http://ec2.amazonaws.com/doc/2016-11-15/";

pub struct Xml {
    writer: Writer<Vec<u8>>,
}

impl Xml {
    /// A document, starting with the XML declaration.
    pub fn document() -> Xml {
        let mut writer = Writer::new(Vec::new());
        writer.write_event(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None))).expect("writing to memory");
        writer.get_mut().push(b'\n');
        Xml { writer }
    }

    /// A whole response: `<{action}Response xmlns=…><requestId>…` then `body`.
    pub fn response(action: &str, request_id: &str, body: impl FnOnce(&mut Xml)) -> String {
        let mut xml = Xml::document();
        let root = format!("{action}Response");
        let start = BytesStart::new(root.as_str()).with_attributes([("xmlns", NAMESPACE)]);
        xml.event(Event::Start(start));
        xml.text("requestId", request_id);
        body(&mut xml);
        xml.event(Event::End(BytesEnd::new(root.as_str())));
        xml.finish()
    }

    fn event(&mut self, event: Event<'_>) {
        self.writer.write_event(event).expect("writing to memory");
    }

    pub fn elem(&mut self, name: &str, inner: impl FnOnce(&mut Xml)) {
        self.event(Event::Start(BytesStart::new(name)));
        inner(self);
        self.event(Event::End(BytesEnd::new(name)));
    }

    pub fn text(&mut self, name: &str, value: &str) {
        // XML 1.0 has no way to carry most control characters, even escaped: one echoed
        // from a request would make the whole answer unreadable.
        let carried: std::borrow::Cow<'_, str> = if value.chars().any(not_in_xml) {
            value.chars().map(|c| if not_in_xml(c) { '\u{fffd}' } else { c }).collect::<String>().into()
        } else {
            value.into()
        };
        self.elem(name, |x| x.event(Event::Text(BytesText::new(&carried))));
    }

    pub fn opt(&mut self, name: &str, value: Option<&str>) {
        if let Some(value) = value {
            self.text(name, value);
        }
    }

    pub fn bool(&mut self, name: &str, value: bool) {
        self.text(name, if value { "true" } else { "false" });
    }

    pub fn int(&mut self, name: &str, value: i64) {
        self.text(name, &value.to_string());
    }

    /// `<name><item>…</item>…</name>`, present even when empty.
    pub fn set<T>(&mut self, name: &str, items: impl IntoIterator<Item = T>, mut item: impl FnMut(&mut Xml, T)) {
        self.elem(name, |x| {
            for it in items {
                x.elem("item", |x| item(x, it));
            }
        });
    }

    /// `<name><item>text</item>…</name>`: a list of strings.
    pub fn strings<'s>(&mut self, name: &str, items: impl IntoIterator<Item = &'s str>) {
        self.elem(name, |x| {
            for it in items {
                x.text("item", it);
            }
        });
    }

    pub fn finish(self) -> String {
        String::from_utf8(self.writer.into_inner()).expect("quick-xml writes UTF-8")
    }
}

fn not_in_xml(c: char) -> bool {
    c.is_control() && !matches!(c, '\t' | '\n' | '\r')
}

/// EC2's timestamps: `2026-01-02T03:04:05.000Z`, from our RFC 3339 ones.
pub fn timestamp(rfc3339: &str) -> String {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .map(|t| t.with_timezone(&chrono::Utc).format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
        .unwrap_or_else(|_| rfc3339.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_response_starts_with_the_declaration_and_escapes_text() {
        let body = Xml::response("DescribeTags", "r-1", |x| {
            x.set("tagSet", [("a<b", "c&d")], |x, (k, v)| {
                x.text("key", k);
                x.text("value", v);
            });
            x.set("emptySet", Vec::<u8>::new(), |_, _| {});
            x.opt("absent", None);
            x.bool("flag", true);
        });
        assert!(body.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<DescribeTagsResponse xmlns=\"http://ec2.amazonaws.com/doc/2016-11-15/\"><requestId>r-1</requestId>"), "{body}");
        assert!(body.contains("<tagSet><item><key>a&lt;b</key><value>c&amp;d</value></item></tagSet><emptySet></emptySet><flag>true</flag>"), "{body}");
        assert!(!body.contains("absent"));
        let echoed = Xml::response("X", "r", |x| x.text("message", "id \u{1} here\n"));
        assert!(echoed.contains("<message>id \u{fffd} here\n</message>"), "{echoed}");
    }

    #[test]
    fn timestamps_have_milliseconds_and_z() {
        assert_eq!(timestamp("2026-01-02T03:04:05Z"), "2026-01-02T03:04:05.000Z");
        assert_eq!(timestamp("2026-01-02T04:04:05+01:00"), "2026-01-02T03:04:05.000Z");
    }
}
