//! The EC2 Query API's parameters: a form (`a=1&b=2`, `+` and `%20` for spaces) whose
//! dotted keys build lists and structures (`InstanceId.1`, `Filter.1.Value.2`), each
//! numbered from 1 and ordered by number, not by text. An empty value counts as absent.

use std::collections::BTreeMap;

use super::error::Ec2Error;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params(BTreeMap<String, String>);

impl Params {
    /// The parameters of a query string or a form body; a key given twice keeps its last value.
    pub fn parse(encoded: &[u8]) -> Params {
        Params(
            form_urlencoded::parse(encoded)
                .filter(|(_, v)| !v.is_empty())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    /// Adds `other`'s parameters, which win over these.
    pub fn extend(&mut self, other: Params) {
        self.0.extend(other.0);
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// A parameter that must be there.
    pub fn require(&self, key: &str) -> Result<&str, Ec2Error> {
        self.get(key).ok_or_else(|| Ec2Error::missing(key))
    }

    /// `key` as `true`/`false` (any case); absent is None.
    pub fn bool(&self, key: &str) -> Result<Option<bool>, Ec2Error> {
        match self.get(key) {
            None => Ok(None),
            Some(v) if v.eq_ignore_ascii_case("true") => Ok(Some(true)),
            Some(v) if v.eq_ignore_ascii_case("false") => Ok(Some(false)),
            Some(v) => Err(Ec2Error::invalid_value(key, v, "expected true or false")),
        }
    }

    /// `key` as a whole number; absent is None.
    pub fn int(&self, key: &str) -> Result<Option<i64>, Ec2Error> {
        self.get(key)
            .map(|v| v.parse().map_err(|_| Ec2Error::invalid_value(key, v, "expected a whole number")))
            .transpose()
    }

    /// The values of `prefix.1`, `prefix.2`, … in numeric order.
    pub fn list(&self, prefix: &str) -> Vec<String> {
        let mut items: Vec<(u32, String)> = self
            .0
            .iter()
            .filter_map(|(k, v)| {
                let n = k.strip_prefix(prefix)?.strip_prefix('.')?;
                n.parse().ok().map(|n: u32| (n, v.clone()))
            })
            .collect();
        items.sort_by_key(|(n, _)| *n);
        items.into_iter().map(|(_, v)| v).collect()
    }

    /// The structures `prefix.N.…`, each with its own keys (`prefix.1.Name` is `Name`
    /// in the first), in numeric order.
    pub fn structs(&self, prefix: &str) -> Vec<Params> {
        let mut groups: BTreeMap<u32, BTreeMap<String, String>> = BTreeMap::new();
        for (key, value) in &self.0 {
            let Some(rest) = key.strip_prefix(prefix).and_then(|r| r.strip_prefix('.')) else { continue };
            let Some((n, field)) = rest.split_once('.') else { continue };
            let Ok(n) = n.parse::<u32>() else { continue };
            groups.entry(n).or_default().insert(field.to_string(), value.clone());
        }
        groups.into_values().map(Params).collect()
    }

    /// A structure given as `prefix.Field` (e.g. `Placement.AvailabilityZone`).
    pub fn nested(&self, prefix: &str) -> Params {
        Params(
            self.0
                .iter()
                .filter_map(|(k, v)| Some((k.strip_prefix(prefix)?.strip_prefix('.')?.to_string(), v.clone())))
                .collect(),
        )
    }

    /// Everything but the keys that do not change what a request asks for (signature,
    /// version, the token itself), as one line: what a reused client token must match.
    pub fn digest(&self) -> String {
        const IGNORED: [&str; 4] = ["ClientToken", "DryRun", "Version", "Action"];
        self.0
            .iter()
            .filter(|(k, _)| !IGNORED.contains(&k.as_str()) && !k.starts_with("X-Amz-"))
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("&")
    }

    /// `prefix.1`, `prefix.2`, … holding `values`.
    pub fn from_list(prefix: &str, values: &[&str]) -> Params {
        Params(values.iter().enumerate().map(|(n, v)| (format!("{prefix}.{}", n + 1), v.to_string())).collect())
    }

    #[cfg(test)]
    pub fn from_pairs(pairs: &[(&str, &str)]) -> Params {
        Params(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
    }
}

/// `Filter.N.Name` with its `Filter.N.Value.M`s.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    pub name: String,
    pub values: Vec<String>,
}

impl Params {
    /// The `Filter.N`s, each one of `known` (or `tag:KEY` when `known` has `tag:`);
    /// another name is refused before anything is looked at.
    pub fn filters(&self, known: &[&str]) -> Result<Vec<Filter>, Ec2Error> {
        let filters: Vec<Filter> = self
            .structs("Filter")
            .into_iter()
            .map(|f| Ok(Filter { name: f.require("Name")?.to_string(), values: f.list("Value") }))
            .collect::<Result<_, Ec2Error>>()?;
        for f in &filters {
            let tag_filter = f.name.starts_with("tag:") && known.contains(&"tag:");
            if !tag_filter && !known.contains(&f.name.as_str()) {
                return Err(Ec2Error::client("InvalidParameterValue", format!("The filter '{}' is invalid", f.name)));
            }
        }
        Ok(filters)
    }
}

/// Whether an item passes every filter (AND), each by one of its values (OR);
/// `values_of` gives the item's values for a filter name (checked by `filters`).
pub fn passes_all(filters: &[Filter], mut values_of: impl FnMut(&str) -> Vec<String>) -> bool {
    filters.iter().all(|f| {
        let values = values_of(&f.name);
        f.values.iter().any(|pattern| values.iter().any(|v| wildcard_match(pattern, v)))
    })
}

/// Whether `value` matches `pattern`, where `*` is any run of characters and `?` one.
pub fn wildcard_match(pattern: &str, value: &str) -> bool {
    let (p, v): (Vec<char>, Vec<char>) = (pattern.chars().collect(), value.chars().collect());
    let (mut pi, mut vi, mut star, mut mark) = (0, 0, None, 0);
    while vi < v.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == v[vi]) {
            pi += 1;
            vi += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = vi;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            vi = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_decode_spaces_and_skip_empty_values() {
        let p = Params::parse(b"Action=RunInstances&Name=a+b%20c&Placement.AvailabilityZone=&X=%2B");
        assert_eq!(p.get("Name"), Some("a b c"));
        assert_eq!(p.get("X"), Some("+"));
        assert_eq!(p.get("Placement.AvailabilityZone"), None, "Terraform sends empty values for unset fields");
        assert_eq!(p.require("Missing").unwrap_err().code, "MissingParameter");
    }

    #[test]
    fn dotted_keys_are_ordered_by_number() {
        let p = Params::parse(b"InstanceId.10=i-10&InstanceId.2=i-2&InstanceId.1=i-1&InstanceIdX=no");
        assert_eq!(p.list("InstanceId"), ["i-1", "i-2", "i-10"]);
        let p = Params::parse(
            b"Filter.2.Name=tag:env&Filter.2.Value.1=dev&Filter.1.Name=instance-state-name&Filter.1.Value.2=stopped&Filter.1.Value.1=running",
        );
        let filters = p.filters(&["instance-state-name", "tag:"]).unwrap();
        assert_eq!(p.filters(&["instance-state-name"]).unwrap_err().code, "InvalidParameterValue");
        assert_eq!(
            filters[0],
            Filter { name: "instance-state-name".into(), values: vec!["running".into(), "stopped".into()] }
        );
        assert_eq!(filters[1].name, "tag:env");
        let p = Params::parse(b"TagSpecification.1.ResourceType=instance&TagSpecification.1.Tag.1.Key=Name&TagSpecification.1.Tag.1.Value=web");
        let spec = &p.structs("TagSpecification")[0];
        assert_eq!(spec.get("ResourceType"), Some("instance"));
        let tag = &spec.structs("Tag")[0];
        assert_eq!((tag.get("Key"), tag.get("Value")), (Some("Name"), Some("web")));
        assert_eq!(p.nested("TagSpecification.1").get("ResourceType"), Some("instance"));
    }

    #[test]
    fn booleans_and_numbers_are_checked() {
        let p = Params::parse(b"DryRun=TRUE&Force=false&Bad=yes&MaxResults=5&Few=x");
        assert_eq!(p.bool("DryRun").unwrap(), Some(true));
        assert_eq!(p.bool("Force").unwrap(), Some(false));
        assert_eq!(p.bool("Absent").unwrap(), None);
        assert_eq!(p.bool("Bad").unwrap_err().code, "InvalidParameterValue");
        assert_eq!(p.int("MaxResults").unwrap(), Some(5));
        assert!(p.int("Few").is_err());
    }

    #[test]
    fn the_digest_ignores_what_does_not_change_the_request() {
        let a = Params::parse(b"Action=RunInstances&Version=2016-11-15&ClientToken=t&ImageId=ami-1&MaxCount=1");
        let b = Params::parse(
            b"Action=RunInstances&Version=2015-01-01&ClientToken=t&DryRun=false&ImageId=ami-1&MaxCount=1",
        );
        let c = Params::parse(b"Action=RunInstances&ClientToken=t&ImageId=ami-2&MaxCount=1");
        assert_eq!(a.digest(), b.digest());
        assert_ne!(a.digest(), c.digest());
    }

    #[test]
    fn wildcards_match_like_ec2_filters() {
        assert!(wildcard_match("web-*", "web-1"));
        assert!(wildcard_match("web-?", "web-1"));
        assert!(!wildcard_match("web-?", "web-12"));
        assert!(wildcard_match("*", ""));
        assert!(wildcard_match("a*b*c", "axxbyyc"));
        assert!(!wildcard_match("a*b", "axxc"));
        assert!(wildcard_match("exact", "exact"));
    }
}
