//! SSH key pairs (REQ-SSH-001..007): import with validation and fingerprints, create,
//! delete, and the private half kept for the web terminal.

use std::io::Write;

use russh::keys::ssh_encoding::Encode;
use russh::keys::ssh_key::{self, Algorithm, HashAlg, LineEnding, PrivateKey, PublicKey};

use crate::db::key_pairs::{self as rows, KeyPairRow};
use crate::db::{Db, timestamp_now};
use crate::error::AppError;
use crate::paths::Paths;
pub use error::KeyPairError;

/// The key types of REQ-SSH-002.
pub const SUPPORTED_TYPES: [&str; 5] =
    ["ssh-rsa", "ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521"];
pub const MIN_RSA_BITS: u32 = 2048;

/// Options that start an authorized_keys line, pasted by mistake with the key.
const AUTHORIZED_KEYS_OPTIONS: [&str; 8] = [
    "no-pty",
    "restrict",
    "no-port-forwarding",
    "no-agent-forwarding",
    "no-X11-forwarding",
    "no-user-rc",
    "cert-authority",
    "no-touch-required",
];

/// What is wrong with a public key, said so a person can fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidPublicKey(pub String);

/// A validated OpenSSH public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidPublicKey {
    pub key_type: String,
    /// `TYPE BASE64 [COMMENT]`, trimmed.
    pub openssh: String,
    /// MD5 of the key blob, colon-separated lowercase hex (as `ssh-keygen -E md5`, no prefix).
    pub fingerprint_md5: String,
    /// `SHA256:...` as `ssh-keygen -l` prints it.
    pub fingerprint_sha256: String,
}

const EXPECTED: &str = "expected one OpenSSH public key line: TYPE BASE64 [COMMENT], \
     where TYPE is ssh-ed25519, ssh-rsa or ecdsa-sha2-nistp256/384/521 (the content of a .pub file)";

/// Validates an OpenSSH public key line (REQ-SSH-001/002).
pub fn parse_public_key(input: &str) -> Result<ValidPublicKey, InvalidPublicKey> {
    let invalid = |why: &str| InvalidPublicKey(format!("{why}; {EXPECTED}"));
    let text = input.trim();
    if text.is_empty() {
        return Err(invalid("the public key is empty"));
    }
    if text.contains("PRIVATE KEY") {
        return Err(InvalidPublicKey(
            "this is a private key: never share it. Paste the public key instead (the .pub file, \
             or the output of `ssh-keygen -y -f KEY`)"
                .into(),
        ));
    }
    if text.starts_with("-----BEGIN") {
        return Err(invalid("this is a PEM block (a certificate or a PKCS key), not an OpenSSH public key"));
    }
    if text.starts_with("PuTTY-User-Key-File") {
        return Err(invalid("this is a PuTTY private key file; export the OpenSSH public key from PuTTYgen"));
    }
    if text.starts_with("---- BEGIN SSH2 PUBLIC KEY") {
        return Err(invalid("this is an RFC 4716 (SSH2) public key; convert it with `ssh-keygen -i -f KEY.pub`"));
    }
    if text.contains(['\n', '\r']) {
        return Err(invalid("more than one line was given; import one key at a time"));
    }
    if text.chars().any(|c| c.is_control() && c != '\t') {
        return Err(invalid("the key contains control characters"));
    }
    let mut parts = text.split_whitespace();
    let key_type = parts.next().unwrap_or_default();
    let Some(blob) = parts.next() else {
        return Err(invalid("the key has a type but no key data"));
    };
    if !SUPPORTED_TYPES.contains(&key_type) {
        let why = match key_type {
            "ssh-dss" => "DSA keys are not supported (OpenSSH disabled them)".to_string(),
            t if t.starts_with("sk-") => format!("security-key type {t:?} is not supported"),
            t if t.contains('=') || AUTHORIZED_KEYS_OPTIONS.iter().any(|o| t.starts_with(o)) => {
                "authorized_keys options are not accepted; give the key alone".to_string()
            }
            t => format!("unsupported key type {:?}", t.chars().take(40).collect::<String>()),
        };
        return Err(invalid(&why));
    }
    // A second key pasted on one line shows up as another type in the comment.
    let comment: Vec<&str> = parts.collect();
    if comment.iter().any(|w| SUPPORTED_TYPES.contains(w) || *w == "ssh-dss") {
        return Err(invalid("more than one key was given; import one key at a time"));
    }
    let line = if comment.is_empty() {
        format!("{key_type} {blob}")
    } else {
        format!("{key_type} {blob} {}", comment.join(" "))
    };
    let key = PublicKey::from_openssh(&line).map_err(|e| match e {
        ssh_key::Error::AlgorithmUnknown => invalid(&format!("the key data is not a {key_type} key")),
        _ => invalid(&format!("the key data does not decode as a {key_type} key ({e})")),
    })?;
    if key.algorithm().as_str() != key_type {
        return Err(invalid(&format!("the key data is a {} key, not {key_type}", key.algorithm().as_str())));
    }
    if let Some(rsa) = key.key_data().rsa() {
        let bits = rsa.key_size();
        if bits < MIN_RSA_BITS {
            return Err(InvalidPublicKey(format!(
                "RSA keys must have at least {MIN_RSA_BITS} bits; this one has {bits}. \
                 Make a new one with `ssh-keygen -t ed25519`"
            )));
        }
    }
    Ok(describe(&key, line))
}

fn describe(key: &PublicKey, openssh: String) -> ValidPublicKey {
    let blob = key.key_data().encode_vec().expect("a parsed key encodes");
    let digest = md5::compute(&blob);
    ValidPublicKey {
        key_type: key.algorithm().as_str().to_string(),
        openssh,
        fingerprint_md5: digest.0.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":"),
        fingerprint_sha256: key.fingerprint(HashAlg::Sha256).to_string(),
    }
}

/// Key pair names: 1–255 printable ASCII characters (REQ-SSH-004).
pub fn validate_name(name: &str) -> Result<(), AppError> {
    let ok = !name.is_empty() && name.len() <= 255 && name.bytes().all(|b| (0x20..=0x7e).contains(&b));
    if ok && !name.trim().is_empty() { Ok(()) } else { Err(KeyPairError::InvalidName.into()) }
}

/// A stored key pair (the row is the domain value: nothing about it needs hiding).
pub use crate::db::key_pairs::KeyPairRow as KeyPair;

/// The kinds of key pair CreateKeyPair makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    Ed25519,
    Rsa,
}

/// An RSA private key as EC2 hands it out (PKCS#1 PEM) and EC2's fingerprint of a key
/// it made: the SHA-1 of the private key's PKCS#8 DER, colon-separated.
fn aws_rsa_private(keypair: &ssh_key::private::RsaKeypair) -> Result<(String, String), KeyPairError> {
    use rsa::pkcs1::EncodeRsaPrivateKey;
    use rsa::pkcs8::EncodePrivateKey;
    use sha1::Digest;
    let fail = |what: &str, e: String| KeyPairError::Encoding(format!("{what}: {e}"));
    let key = rsa::RsaPrivateKey::try_from(keypair).map_err(|e| fail("converting the RSA key", e.to_string()))?;
    let pem = key.to_pkcs1_pem(rsa::pkcs1::LineEnding::LF).map_err(|e| fail("encoding PKCS#1", e.to_string()))?;
    let der = key.to_pkcs8_der().map_err(|e| fail("encoding PKCS#8", e.to_string()))?;
    Ok((pem.to_string(), colon_hex(&sha1::Sha1::digest(der.as_bytes()))))
}

fn colon_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

/// The fingerprint EC2 shows for a pair: for RSA made here, the one stored at creation;
/// for imported RSA, the MD5 of the public key's DER (SubjectPublicKeyInfo); for
/// ed25519 (and the ECDSA keys EC2 lacks), the base64 SHA-256 of the key, padded.
pub fn ec2_fingerprint(pair: &KeyPair) -> String {
    if let Some(stored) = &pair.ec2_fingerprint {
        return stored.clone();
    }
    let Ok(public) = PublicKey::from_openssh(&pair.public_key) else { return pair.fingerprint_md5.clone() };
    if let Some(rsa_key) = public.key_data().rsa() {
        use rsa::pkcs8::EncodePublicKey;
        let der = rsa::RsaPublicKey::try_from(rsa_key).ok().and_then(|k| k.to_public_key_der().ok());
        if let Some(der) = der {
            return colon_hex(&md5::compute(der.as_bytes()).0);
        }
    }
    let sha256 = public.fingerprint(HashAlg::Sha256).to_string();
    let unpadded = sha256.trim_start_matches("SHA256:");
    format!("{unpadded}{}", "=".repeat((4 - unpadded.len() % 4) % 4))
}

/// A private key in OpenSSH PEM form. Never printed by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct PrivateKeyPem(pub String);

impl std::fmt::Debug for PrivateKeyPem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PrivateKeyPem(<redacted>)")
    }
}

#[derive(Clone)]
pub struct KeyPairs {
    db: Db,
    paths: Paths,
}

fn not_found(name: &str) -> AppError {
    KeyPairError::NotFound(name.to_string()).into()
}

impl KeyPairs {
    pub fn new(db: Db, paths: Paths) -> Self {
        Self { db, paths }
    }

    /// Imports a public key (EC2 ImportKeyPair).
    pub async fn import(&self, name: &str, public_key: &str) -> Result<KeyPair, AppError> {
        validate_name(name)?;
        let key = parse_public_key(public_key).map_err(|e| KeyPairError::InvalidKeyFormat(e.to_string()))?;
        self.insert(name, key, None, None).await
    }

    /// Creates a new pair (EC2 CreateKeyPair); the private key is returned once: an
    /// ed25519 key in OpenSSH's format, or a 2048-bit RSA key as PKCS#1 PEM, as EC2 gives.
    pub async fn create(&self, name: &str, kind: KeyKind) -> Result<(KeyPair, PrivateKeyPem), AppError> {
        validate_name(name)?;
        let crypto = |context| move |source| KeyPairError::Crypto { context, source };
        let (private, pem, ec2_fingerprint) = match kind {
            KeyKind::Ed25519 => {
                let private = PrivateKey::random(&mut russh::keys::key::safe_rng(), Algorithm::Ed25519)
                    .map_err(crypto("generating a key"))?;
                let pem = private.to_openssh(LineEnding::LF).map_err(crypto("encoding a key"))?.to_string();
                (private, pem, None)
            }
            KeyKind::Rsa => {
                // Prime search is CPU work: off the runtime.
                let keypair = tokio::task::spawn_blocking(|| {
                    ssh_key::private::RsaKeypair::random(&mut russh::keys::key::safe_rng(), 2048)
                })
                .await?
                .map_err(crypto("generating a key"))?;
                let (pem, sha1) = aws_rsa_private(&keypair)?;
                (PrivateKey::from(keypair), pem, Some(sha1))
            }
        };
        let mut private = private;
        private.set_comment(name);
        let public = private.public_key();
        let openssh = public.to_openssh().map_err(crypto("encoding a key"))?;
        let key = describe(public, openssh);
        let pair = self.insert(name, key, Some(PrivateKeyPem(pem.clone())), ec2_fingerprint).await?;
        Ok((pair, PrivateKeyPem(pem)))
    }

    async fn insert(
        &self,
        name: &str,
        key: ValidPublicKey,
        private: Option<PrivateKeyPem>,
        ec2_fingerprint: Option<String>,
    ) -> Result<KeyPair, AppError> {
        let row = KeyPairRow {
            name: name.to_string(),
            key_type: key.key_type,
            public_key: key.openssh,
            fingerprint_md5: key.fingerprint_md5,
            fingerprint_sha256: key.fingerprint_sha256,
            has_private_key: private.is_some(),
            created_at: timestamp_now(),
            key_pair_id: crate::ids::long_id("key"),
            ec2_fingerprint,
        };
        let private_file = self.paths.private_key(name);
        let stored = row.clone();
        let outcome = self
            .db
            .call(move |conn| {
                // The file is written inside the transaction: if it fails, no row is left.
                rows::insert_new(conn, &stored, || match &private {
                    Some(pem) => write_private_key(&private_file, pem),
                    None => Ok(()),
                })
            })
            .await?;
        let inserted = match outcome {
            Ok(Ok(())) => row,
            Ok(Err(e)) => return Err(KeyPairError::Store(e).into()),
            Err(rows::KeyPairTaken::Name) => return Err(KeyPairError::NameTaken(row.name).into()),
            Err(rows::KeyPairTaken::Key(existing)) => return Err(KeyPairError::KeyTaken(existing).into()),
        };
        tracing::info!(key_pair = %inserted.name, fingerprint = %inserted.fingerprint_sha256, "key pair stored");
        Ok(inserted)
    }

    pub async fn list(&self) -> Result<Vec<KeyPair>, AppError> {
        Ok(self.db.call(|conn| rows::list(conn)).await?)
    }

    pub async fn get(&self, name: &str) -> Result<KeyPair, AppError> {
        let owned = name.to_string();
        self.db.call(move |conn| rows::get(conn, &owned)).await?.ok_or_else(|| not_found(name))
    }

    /// Deletes the pair and its private key; instances launched with it keep their copy
    /// of the public key (REQ-SSH-006).
    pub async fn delete(&self, name: &str) -> Result<(), AppError> {
        let owned = name.to_string();
        let deleted = self.db.call(move |conn| rows::delete(conn, &owned)).await?;
        if !deleted {
            return Err(not_found(name));
        }
        match std::fs::remove_file(self.paths.private_key(name)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(key_pair = %name, error = %e, "could not remove the private key file"),
        }
        tracing::info!(key_pair = %name, "key pair deleted");
        Ok(())
    }

    /// Attaches the private half of an imported key, for the web terminal.
    pub async fn attach_private_key(&self, name: &str, pem: &str) -> Result<KeyPair, AppError> {
        let pair = self.get(name).await?;
        let private = parse_private_key(pem).map_err(KeyPairError::InvalidPrivateKey)?;
        let stored = PublicKey::from_openssh(&pair.public_key)
            .map_err(|source| KeyPairError::Crypto { context: "reading the stored public key", source })?;
        if private.public_key().key_data() != stored.key_data() {
            return Err(KeyPairError::PrivateKeyMismatch(name.to_string()).into());
        }
        let pem = private
            .to_openssh(LineEnding::LF)
            .map_err(|source| KeyPairError::Crypto { context: "encoding a key", source })?
            .to_string();
        let (path, pem) = (self.paths.private_key(name), PrivateKeyPem(pem.to_string()));
        // Off the runtime: the write is fsynced.
        tokio::task::spawn_blocking(move || write_private_key(&path, &pem)).await?.map_err(KeyPairError::Store)?;
        let owned = name.to_string();
        self.db.call(move |conn| rows::set_has_private_key(conn, &owned, true)).await?;
        self.get(name).await
    }

    /// The stored private key of a pair (the file may outlive a failed delete).
    pub async fn private_key(&self, name: &str) -> Result<Option<PrivateKeyPem>, AppError> {
        match std::fs::read_to_string(self.paths.private_key(name)) {
            Ok(pem) => Ok(Some(PrivateKeyPem(pem))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The key that logs into an instance launched with pair `name` and public key
    /// `launched_with`. A stored key is used only if the pair still holds the key the
    /// instance was launched with: a pair deleted and made again under the same name
    /// holds another, which must not be handed to the older instances.
    pub async fn login_key(&self, name: &str, launched_with: &str) -> Result<LoginKey, AppError> {
        let owned = name.to_string();
        let Some(pair) = self.db.call(move |conn| rows::get(conn, &owned)).await? else {
            return Ok(LoginKey::Deleted);
        };
        let same_key = PublicKey::from_openssh(&pair.public_key)
            .ok()
            .zip(PublicKey::from_openssh(launched_with).ok())
            .is_some_and(|(now, then)| now.key_data() == then.key_data());
        if !same_key {
            return Ok(LoginKey::Replaced);
        }
        let Some(pem) = self.private_key(name).await? else {
            return Ok(LoginKey::NotStored);
        };
        // A file that does not hold the pair's key (damaged, or left from before) is not used.
        let matches = parse_private_key(&pem.0).is_ok_and(|key| {
            PublicKey::from_openssh(launched_with).is_ok_and(|public| key.public_key().key_data() == public.key_data())
        });
        Ok(if matches { LoginKey::Stored(pem) } else { LoginKey::NotStored })
    }
}

/// What the service holds to log into an instance launched with a key pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginKey {
    Stored(PrivateKeyPem),
    /// Only the public half was imported.
    NotStored,
    /// The pair was deleted since the launch.
    Deleted,
    /// The pair's name now holds another key than the instance was launched with.
    Replaced,
}

/// Reads a private key as a user has it: OpenSSH, PKCS#1 (`BEGIN RSA PRIVATE KEY`),
/// PKCS#8 or SEC1 PEM, also when its line breaks were lost in a paste. The error says
/// what to do, for the terminal and the API alike.
pub fn parse_private_key(text: &str) -> Result<PrivateKey, String> {
    let text = with_line_breaks(text);
    if text.contains("ENCRYPTED") {
        return Err(PASSPHRASE.into());
    }
    if text.starts_with("ssh-") || text.starts_with("ecdsa-") || text.contains("PUBLIC KEY") {
        return Err("this is a public key; give the private key (the file without .pub)".into());
    }
    let key = russh::keys::decode_secret_key(&text, None).map_err(|e| match e {
        russh::keys::Error::KeyIsEncrypted => PASSPHRASE.to_string(),
        e => format!(
            "not a private key ssh can use ({e}); expected a PEM block such as \
             -----BEGIN OPENSSH PRIVATE KEY----- … -----END OPENSSH PRIVATE KEY-----"
        ),
    })?;
    if key.is_encrypted() {
        return Err(PASSPHRASE.into());
    }
    Ok(key)
}

const PASSPHRASE: &str =
    "the private key is protected by a passphrase; remove it on a copy with `ssh-keygen -p -f COPY`";

/// A PEM block pasted into a single-line field arrives with its line breaks turned
/// into spaces (or removed); the decoders read it line by line, so they are put back.
fn with_line_breaks(text: &str) -> String {
    let text = text.trim().replace("\r\n", "\n").replace('\r', "\n");
    if text.lines().count() >= 3 {
        // Indentation or trailing spaces from an editor or a chat window.
        return text.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join("\n");
    }
    let Some(begin) = text.find("-----BEGIN ") else { return text };
    let Some(header_len) = text[begin + 11..].find("-----").map(|i| i + 16) else { return text };
    let Some(end) = text.rfind("-----END ") else { return text };
    if end < begin + header_len {
        return text;
    }
    let body: String = text[begin + header_len..end].chars().filter(|c| !c.is_whitespace()).collect();
    let mut lines = vec![text[begin..begin + header_len].to_string()];
    lines.extend(body.as_bytes().chunks(70).map(|c| String::from_utf8_lossy(c).into_owned()));
    lines.push(text[end..].trim().to_string());
    lines.join("\n")
}

/// Writes the key atomically: a private temporary file (0600) beside it, synced,
/// then renamed over it.
fn write_private_key(path: &std::path::Path, pem: &PrivateKeyPem) -> std::io::Result<()> {
    let dir = path.parent().expect("a key file is inside keys/");
    std::fs::create_dir_all(dir)?;
    let mut file = tempfile::NamedTempFile::new_in(dir)?;
    file.write_all(pem.0.as_bytes())?;
    file.as_file().sync_all()?;
    file.persist(path).map_err(|e| e.error)?;
    Ok(())
}

pub mod error;
#[cfg(test)]
mod tests;
