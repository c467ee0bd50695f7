//! Key pairs through EC2, one store with the REST API: the same names, validation and
//! private keys, EC2's ids, fingerprints and error codes.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;

use super::Call;
use super::error::Ec2Error;
use super::form::passes_all;
use super::xml::{Xml, timestamp};
use crate::keypairs::{KeyKind, KeyPair, ec2_fingerprint};

/// EC2's key type: rsa and ed25519 as AWS names them; other types by their own name.
fn key_type(pair: &KeyPair) -> &str {
    match pair.key_type.as_str() {
        "ssh-rsa" => "rsa",
        "ssh-ed25519" => "ed25519",
        other => other,
    }
}

pub async fn import_key_pair(call: &Call<'_>) -> Result<String, Ec2Error> {
    let name = call.params.require("KeyName")?.to_string();
    let material = call.params.require("PublicKeyMaterial")?;
    // The SDKs base64 the key; a caller of the raw API may send it as it is.
    let public_key = BASE64
        .decode(material.trim())
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .unwrap_or_else(|| material.to_string());
    if call.params.bool("DryRun")? == Some(true) {
        crate::keypairs::validate_name(&name)?;
        crate::keypairs::parse_public_key(&public_key)
            .map_err(|e| Ec2Error::client("InvalidKeyPair.Format", e.to_string()))?;
        if call.app.key_pairs.get(&name).await.is_ok() {
            return Err(Ec2Error::client("InvalidKeyPair.Duplicate", format!("The keypair '{name}' already exists.")));
        }
        return Err(Ec2Error::dry_run());
    }
    let pair = call.app.key_pairs.import(&name, &public_key).await?;
    Ok(call.respond(|x| {
        x.text("keyFingerprint", &ec2_fingerprint(&pair));
        x.text("keyName", &pair.name);
        x.text("keyPairId", &pair.key_pair_id);
        x.set("tagSet", Vec::<()>::new(), |_, _| {});
    }))
}

pub async fn create_key_pair(call: &Call<'_>) -> Result<String, Ec2Error> {
    let name = call.params.require("KeyName")?.to_string();
    let kind = match call.params.get("KeyType").unwrap_or("rsa") {
        "rsa" => KeyKind::Rsa,
        "ed25519" => KeyKind::Ed25519,
        other => return Err(Ec2Error::invalid_value("KeyType", other, "one of rsa, ed25519")),
    };
    match call.params.get("KeyFormat").unwrap_or("pem") {
        "pem" => {}
        other => return Err(Ec2Error::invalid_value("KeyFormat", other, "only pem is offered")),
    }
    if call.params.bool("DryRun")? == Some(true) {
        crate::keypairs::validate_name(&name)?;
        if call.app.key_pairs.get(&name).await.is_ok() {
            return Err(Ec2Error::client("InvalidKeyPair.Duplicate", format!("The keypair '{name}' already exists.")));
        }
        return Err(Ec2Error::dry_run());
    }
    let (pair, private) = call.app.key_pairs.create(&name, kind).await?;
    Ok(call.respond(|x| {
        x.text("keyPairId", &pair.key_pair_id);
        x.text("keyName", &pair.name);
        x.text("keyFingerprint", &ec2_fingerprint(&pair));
        x.text("keyMaterial", private.0.trim_end());
        x.set("tagSet", Vec::<()>::new(), |_, _| {});
    }))
}

pub async fn describe_key_pairs(call: &Call<'_>) -> Result<String, Ec2Error> {
    let p = &call.params;
    let (names, ids) = (p.list("KeyName"), p.list("KeyPairId"));
    let include_public = p.bool("IncludePublicKey")?.unwrap_or(false);
    let filters = p.filters(&["key-name", "key-pair-id", "fingerprint", "key-type"])?;
    let all = call.app.key_pairs.list().await?;
    for name in &names {
        if !all.iter().any(|k| &k.name == name) {
            return Err(Ec2Error::client("InvalidKeyPair.NotFound", format!("The key pair '{name}' does not exist")));
        }
    }
    for id in &ids {
        if !all.iter().any(|k| &k.key_pair_id == id) {
            return Err(Ec2Error::client("InvalidKeyPair.NotFound", format!("The key pair ID '{id}' does not exist")));
        }
    }
    let mut shown = Vec::new();
    for pair in all {
        let named =
            (names.is_empty() && ids.is_empty()) || names.contains(&pair.name) || ids.contains(&pair.key_pair_id);
        let mut keep = named;
        keep &= passes_all(&filters, |name| {
            vec![match name {
                "key-name" => pair.name.clone(),
                "key-pair-id" => pair.key_pair_id.clone(),
                "fingerprint" => ec2_fingerprint(&pair),
                _ => key_type(&pair).to_string(),
            }]
        });
        if keep {
            shown.push(pair);
        }
    }
    call.stop_if_dry_run()?;
    Ok(call.respond(|x: &mut Xml| {
        x.set("keySet", &shown, |x, pair| {
            x.text("keyPairId", &pair.key_pair_id);
            x.text("keyType", key_type(pair));
            x.set("tagSet", Vec::<()>::new(), |_, _| {});
            if include_public {
                x.text("publicKey", &pair.public_key);
            }
            x.text("createTime", &timestamp(&pair.created_at));
            x.text("keyName", &pair.name);
            x.text("keyFingerprint", &ec2_fingerprint(pair));
        })
    }))
}

/// True even when there is no such pair, as on AWS.
pub async fn delete_key_pair(call: &Call<'_>) -> Result<String, Ec2Error> {
    let all = call.app.key_pairs.list().await?;
    let pair = match (call.params.get("KeyName"), call.params.get("KeyPairId")) {
        (Some(name), _) => all.into_iter().find(|k| k.name == name),
        (None, Some(id)) => all.into_iter().find(|k| k.key_pair_id == id),
        (None, None) => return Err(Ec2Error::missing("KeyName")),
    };
    call.stop_if_dry_run()?;
    if let Some(pair) = &pair {
        match call.app.key_pairs.delete(&pair.name).await {
            Ok(()) | Err(crate::error::AppError::KeyPair(crate::error::KeyPairError::NotFound(_))) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(call.respond(|x| {
        x.bool("return", true);
        x.opt("keyPairId", pair.as_ref().map(|p| p.key_pair_id.as_str()));
    }))
}
