//! Tags on instances. `Name` is the instance's name (the one the REST API and the UI
//! show), so renaming either way is the same write; other tags have a table.

use std::collections::BTreeMap;

use super::create::MAX_NAME_CHARS;
use super::{Instance, Instances, parse_id};
use crate::db::instances as rows;
use crate::db::tags;
use crate::error::{AppError, InstanceError};

pub const NAME: &str = "Name";
const MAX_TAGS: usize = 50;

/// EC2's rules: keys of 1–128 characters not starting with `aws:`, values of at most
/// 256 (a Name at most 255 printable characters, as instance names), 50 per instance.
pub fn validate(tags: &[(String, String)]) -> Result<(), AppError> {
    let bad = |m: String| Err(InstanceError::InvalidTag(m).into());
    if tags.len() > MAX_TAGS {
        return bad(format!("at most {MAX_TAGS} tags per instance; {} were given", tags.len()));
    }
    for (key, value) in tags {
        if key.is_empty() || key.chars().count() > 128 {
            return bad(format!("tag key {key:?} must be 1 to 128 characters"));
        }
        if key.to_ascii_lowercase().starts_with("aws:") {
            return bad(format!("tag key {key:?}: keys starting with aws: are reserved"));
        }
        if key.chars().chain(value.chars()).any(char::is_control) {
            return bad(format!("tag {key:?}: keys and values cannot hold control characters"));
        }
        if value.chars().count() > 256 {
            return bad(format!("the value of tag {key:?} is longer than 256 characters"));
        }
        if key == NAME && (value.chars().count() > MAX_NAME_CHARS || value.chars().any(char::is_control)) {
            return bad("the Name tag must be at most 255 characters, without control characters".into());
        }
    }
    Ok(())
}

/// Splits off the Name tag: (name, other tags).
pub fn split_name(tags: &[(String, String)]) -> (Option<String>, Vec<(String, String)>) {
    let name = tags.iter().rev().find(|(k, _)| k == NAME).map(|(_, v)| v.clone());
    (name, tags.iter().filter(|(k, _)| k != NAME).cloned().collect())
}

impl Instances {
    /// The tags of each instance, Name included when it has one.
    pub async fn tags(&self, instances: &[Instance]) -> Result<BTreeMap<String, BTreeMap<String, String>>, AppError> {
        let ids: Vec<String> = instances.iter().map(|i| i.id.clone()).collect();
        let mut all = self.inner().deps.db.call(move |c| tags::of(c, &ids)).await?;
        for instance in instances.iter().filter(|i| !i.name.is_empty()) {
            all.entry(instance.id.clone()).or_default().insert(NAME.to_string(), instance.name.clone());
        }
        Ok(all)
    }

    /// Tags every instance in `ids`; an unknown id refuses the whole call.
    pub async fn create_tags(&self, ids: &[String], new: &[(String, String)]) -> Result<(), AppError> {
        validate(new)?;
        let ids = self.existing(ids).await?;
        let (name, others) = split_name(new);
        let db = &self.inner().deps.db;
        for id in &ids {
            let (key, more) = (id.clone(), others.len());
            let count = db.call(move |c| tags::count(c, &key)).await?;
            if count + more > MAX_TAGS {
                return Err(
                    InstanceError::InvalidTag(format!("instance {id} would have more than {MAX_TAGS} tags")).into()
                );
            }
        }
        let (targets, tags_to_put) = (ids.clone(), others);
        db.call(move |c| {
            tags::put(c, &targets, &tags_to_put)?;
            if let Some(name) = &name {
                for id in &targets {
                    rows::set_name(c, id, name)?;
                }
            }
            Ok(())
        })
        .await?;
        Ok(())
    }

    /// Removes tags by key (and value, when given) from every instance in `ids`; with
    /// no keys, all of their tags, Name included (as EC2's DeleteTags).
    pub async fn delete_tags(&self, ids: &[String], keys: &[(String, Option<String>)]) -> Result<(), AppError> {
        let ids = self.existing(ids).await?;
        if keys.is_empty() {
            let instances: Vec<Instance> = {
                let mut found = Vec::new();
                for id in &ids {
                    found.push(self.inner().describe(self.inner().row(id).await?));
                }
                found
            };
            let all = self.tags(&instances).await?;
            let every: Vec<(String, Option<String>)> =
                all.values().flat_map(|t| t.keys().map(|k| (k.clone(), None))).collect();
            if every.is_empty() {
                return Ok(());
            }
            return Box::pin(self.delete_tags(&ids, &every)).await;
        }
        let (name, others): (Vec<_>, Vec<_>) = keys.iter().cloned().partition(|(k, _)| k == NAME);
        self.inner()
            .deps
            .db
            .call(move |c| {
                tags::remove(c, &ids, &others)?;
                for (_, value) in &name {
                    for id in &ids {
                        let current = rows::get(c, id)?.map(|r| r.name).unwrap_or_default();
                        if value.as_ref().is_none_or(|v| *v == current) {
                            rows::set_name(c, id, "")?;
                        }
                    }
                }
                Ok(())
            })
            .await?;
        Ok(())
    }

    /// Sets the protection against terminate and stop (what is None stays).
    pub async fn set_protection(
        &self,
        id: &str,
        termination: Option<bool>,
        stop: Option<bool>,
    ) -> Result<Instance, AppError> {
        let id = parse_id(id)?.to_string();
        let key = id.clone();
        let found = self.inner().deps.db.call(move |c| rows::set_protection(c, &key, termination, stop)).await?;
        if !found {
            return Err(super::not_found(&id));
        }
        Ok(self.inner().describe(self.inner().row(&id).await?))
    }

    /// The ids, checked: all exist, or the first that does not is the error.
    async fn existing(&self, ids: &[String]) -> Result<Vec<String>, AppError> {
        let mut checked = Vec::with_capacity(ids.len());
        for id in ids {
            let id = parse_id(id)?.to_string();
            self.inner().row(&id).await?;
            checked.push(id);
        }
        Ok(checked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_follow_ec2s_rules() {
        let tag = |k: &str, v: &str| vec![(k.to_string(), v.to_string())];
        assert!(validate(&tag("env", "dev")).is_ok());
        assert!(validate(&tag("", "x")).is_err());
        assert!(validate(&tag("aws:cloudformation", "x")).is_err());
        assert!(validate(&tag(&"k".repeat(129), "x")).is_err());
        assert!(validate(&tag("k", &"v".repeat(257))).is_err());
        assert!(validate(&tag(NAME, "web\n1")).is_err());
        assert!(validate(&tag("env", "a\u{1}b")).is_err());
        let many: Vec<_> = (0..51).map(|i| (format!("k{i}"), String::new())).collect();
        assert!(validate(&many).is_err());
        let (name, others) = split_name(&[("Name".into(), "a".into()), ("env".into(), "b".into())]);
        assert_eq!((name.as_deref(), others.len()), (Some("a"), 1));
    }
}
