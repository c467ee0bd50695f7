//! The NoCloud seed: `meta-data` and `user-data` files for the `cidata` ISO.
//!
//! The SSH key travels in meta-data (`public-keys`), not in user-data, so the user's
//! own user data reaches the guest byte for byte, whatever its kind (`#cloud-config`,
//! `#!` script, MIME multipart), and the key works with or without it.

use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeedSpec {
    pub instance_id: String,
    pub hostname: String,
    pub ssh_public_keys: Vec<String>,
    pub user_data: Option<String>,
}

/// (file name, content) pairs to put on the ISO.
pub fn seed_files(spec: &SeedSpec) -> Vec<(&'static str, String)> {
    #[derive(Serialize)]
    struct MetaData<'a> {
        #[serde(rename = "instance-id")]
        instance_id: &'a str,
        #[serde(rename = "local-hostname")]
        local_hostname: &'a str,
        #[serde(rename = "public-keys", skip_serializing_if = "<[String]>::is_empty")]
        public_keys: &'a [String],
    }
    // JSON is YAML, and serde_json quotes every value correctly.
    let meta = serde_json::to_string_pretty(&MetaData {
        instance_id: &spec.instance_id,
        local_hostname: &spec.hostname,
        public_keys: &spec.ssh_public_keys,
    })
    .expect("meta-data serialises");
    let user = spec.user_data.clone().unwrap_or_else(|| "#cloud-config\n{}\n".to_string());
    vec![("meta-data", meta + "\n"), ("user-data", user)]
}

#[cfg(test)]
mod tests {
    use super::*;

    // REQ-INST-005
    #[test]
    fn key_goes_to_meta_data_and_user_data_is_unchanged() {
        let script = "#!/bin/sh\necho 'hi \"there\"' > /tmp/marker\n";
        let files = seed_files(&SeedSpec {
            instance_id: "i-0123abcd".into(),
            hostname: "web: 1".into(),
            ssh_public_keys: vec!["ssh-ed25519 AAAAC3Nza test@host".into()],
            user_data: Some(script.into()),
        });
        let meta: serde_json::Value = serde_json::from_str(&files[0].1).unwrap();
        assert_eq!(files[0].0, "meta-data");
        assert_eq!(meta["instance-id"], "i-0123abcd");
        assert_eq!(meta["local-hostname"], "web: 1");
        assert_eq!(meta["public-keys"][0], "ssh-ed25519 AAAAC3Nza test@host");
        assert_eq!(files[1], ("user-data", script.to_string()));
    }

    #[test]
    fn without_user_data_an_empty_cloud_config_is_written() {
        let files = seed_files(&SeedSpec {
            instance_id: "i-0123abcd".into(),
            hostname: "i-0123abcd".into(),
            ssh_public_keys: vec![],
            user_data: None,
        });
        assert!(!files[0].1.contains("public-keys"));
        assert!(files[1].1.starts_with("#cloud-config\n"));
    }
}
