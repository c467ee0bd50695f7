//! DNS-rebinding guard: a request whose Host header is not the bound address or
//! `localhost` is refused, so a web page on another site cannot reach the API by
//! pointing its own domain name at 127.0.0.1.

use std::net::SocketAddr;

/// The Host header values accepted for a service bound to `bind`.
pub fn allowed_hosts(bind: SocketAddr) -> Vec<String> {
    let port = bind.port();
    let ip = match bind {
        SocketAddr::V4(v4) => v4.ip().to_string(),
        SocketAddr::V6(v6) => format!("[{}]", v6.ip()),
    };
    let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string(), "[::1]".to_string()];
    if !names.contains(&ip) && !bind.ip().is_unspecified() {
        names.push(ip);
    }
    names.iter().flat_map(|n| [n.clone(), format!("{n}:{port}")]).collect()
}

/// Whether a request with this Host header may pass. Requests without one (HTTP/1.0,
/// some non-browser clients) pass: browsers always send it.
pub fn host_is_allowed(allowed: &[String], host_header: Option<&str>) -> bool {
    match host_header {
        None => true,
        Some(host) => allowed.iter().any(|a| a.eq_ignore_ascii_case(host.trim())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_names_with_the_right_port_pass_and_others_do_not() {
        let allowed = allowed_hosts("127.0.0.1:8000".parse().unwrap());
        for ok in ["localhost:8000", "127.0.0.1:8000", "LOCALHOST:8000", "localhost", "[::1]:8000"] {
            assert!(host_is_allowed(&allowed, Some(ok)), "{ok} refused");
        }
        for bad in ["evil.example:8000", "localhost:8001", "127.0.0.1.nip.io:8000", "attacker.com", ""] {
            assert!(!host_is_allowed(&allowed, Some(bad)), "{bad} allowed");
        }
        assert!(host_is_allowed(&allowed, None));
    }

    #[test]
    fn an_explicit_bind_address_is_accepted_too() {
        let allowed = allowed_hosts("10.1.2.3:9000".parse().unwrap());
        assert!(host_is_allowed(&allowed, Some("10.1.2.3:9000")));
        assert!(!host_is_allowed(&allowed, Some("10.1.2.4:9000")));
    }
}
