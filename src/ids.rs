//! Instance IDs (`i-` + 8 lowercase hex) and the MAC address derived from them.

use std::fmt;
use std::str::FromStr;

/// An EC2-style instance ID: `i-` followed by 8 lowercase hexadecimal characters.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InstanceId([u8; 4]);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid instance id {0:?}: expected i- followed by 8 lowercase hexadecimal characters")]
pub struct InvalidInstanceId(pub String);

impl InstanceId {
    pub fn from_bytes(bytes: [u8; 4]) -> Self {
        Self(bytes)
    }

    /// A new random ID. Uniqueness against existing rows is the caller's check.
    pub fn random() -> Self {
        let mut bytes = [0u8; 4];
        fill_random(&mut bytes);
        Self(bytes)
    }

    /// The MAC address of the instance's NIC: `52:54` (QEMU's locally administered
    /// prefix) followed by the ID's four bytes, unique by construction.
    pub fn mac_address(&self) -> String {
        let [a, b, c, d] = self.0;
        format!("52:54:{a:02x}:{b:02x}:{c:02x}:{d:02x}")
    }

    /// A new random ID and its MAC, as the database records them (`record_launch`,
    /// `spares::record`), which draw again while the ID is taken.
    pub fn random_with_mac() -> (String, String) {
        let id = Self::random();
        (id.to_string(), id.mac_address())
    }
}

/// `bytes` random bytes as lowercase hex, for names that must not collide.
pub fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    fill_random(&mut buf);
    hex::encode(buf)
}

/// Random bytes from the OS.
fn fill_random(buf: &mut [u8]) {
    getrandom::fill(buf).expect("the OS gives random bytes on every supported host");
}

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "i-{}", hex::encode(self.0))
    }
}

impl fmt::Debug for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for InstanceId {
    type Err = InvalidInstanceId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || InvalidInstanceId(s.to_string());
        let hex_part = s.strip_prefix("i-").ok_or_else(invalid)?;
        let is_lower_hex = |c: char| c.is_ascii_digit() || ('a'..='f').contains(&c);
        if hex_part.len() != 8 || !hex_part.chars().all(is_lower_hex) {
            return Err(invalid());
        }
        let mut bytes = [0u8; 4];
        hex::decode_to_slice(hex_part, &mut bytes).map_err(|_| invalid())?;
        Ok(Self(bytes))
    }
}

/// EC2's long resource ids: `prefix-` and 17 lowercase hex digits (`r-…`, `key-…`).
pub fn long_id(prefix: &str) -> String {
    let hex = random_hex(9);
    format!("{prefix}-{}", &hex[..17])
}

#[cfg(test)]
mod tests {
    use super::*;

    // REQ-INST-003
    #[test]
    fn ids_are_i_dash_eight_lowercase_hex_and_round_trip() {
        for _ in 0..200 {
            let id = InstanceId::random();
            let text = id.to_string();
            assert_eq!(text.len(), 10);
            assert!(text.starts_with("i-"));
            assert!(text[2..].chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
            assert_eq!(text.parse::<InstanceId>().unwrap(), id);
        }
    }

    // REQ-INST-003
    #[test]
    fn malformed_ids_are_refused() {
        for bad in [
            "",
            "i-",
            "i-1234567",
            "i-123456789",
            "i-1234567G",
            "I-12345678",
            "i-1A2B3C4D",
            "x-12345678",
            " i-12345678",
        ] {
            assert!(bad.parse::<InstanceId>().is_err(), "{bad:?} was accepted");
        }
    }

    // REQ-NET-006
    #[test]
    fn mac_is_derived_from_the_id() {
        let id: InstanceId = "i-1a2b3c4d".parse().unwrap();
        assert_eq!(id.mac_address(), "52:54:1a:2b:3c:4d");
        let other: InstanceId = "i-1a2b3c4e".parse().unwrap();
        assert_ne!(id.mac_address(), other.mac_address());
    }
}
