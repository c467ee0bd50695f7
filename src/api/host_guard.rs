//! Guards against other web sites. DNS rebinding: a request whose Host header is not
//! the bound address or `localhost` is refused, so a page on another site cannot reach
//! the API by pointing its own domain name at 127.0.0.1. Cross-site requests: a page
//! on another site can still make the browser send a form to localhost; a request that
//! changes something is refused when the browser says it comes from elsewhere.

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

/// Browsers may only act from the service's own pages; clients that send no Origin
/// (command-line tools, SDKs) may too.
pub fn origin_is_allowed(origin: Option<&str>, port: u16) -> bool {
    match origin {
        None => true,
        Some(origin) => ["localhost", "127.0.0.1", "[::1]"]
            .iter()
            .any(|host| origin.eq_ignore_ascii_case(&format!("http://{host}:{port}"))),
    }
}

/// Whether a request may change something: reads (GET, HEAD, OPTIONS) always may;
/// anything else is refused when its `Origin` is another site's, or when the browser
/// marks it `Sec-Fetch-Site: cross-site`. Requests without those headers pass.
pub fn cross_site_refused(method: &str, origin: Option<&str>, fetch_site: Option<&str>, port: u16) -> bool {
    if matches!(method, "GET" | "HEAD" | "OPTIONS") {
        return false;
    }
    !origin_is_allowed(origin, port) || fetch_site.is_some_and(|s| s.eq_ignore_ascii_case("cross-site"))
}

/// An EC2 action in a GET's query (`GET /?Action=TerminateInstances…`) changes things
/// too, and a page can make the browser send it with an <img>. Such a GET passes only
/// from this service's own origin, or from a tool (no Origin, no Sec-Fetch-Site); a
/// browser marks another site's load, and another port's on localhost, as not same-origin.
pub fn query_action_refused(origin: Option<&str>, fetch_site: Option<&str>, port: u16) -> bool {
    let foreign_fetch =
        fetch_site.is_some_and(|s| !s.eq_ignore_ascii_case("same-origin") && !s.eq_ignore_ascii_case("none"));
    foreign_fetch || (origin.is_some() && !origin_is_allowed(origin, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_action_in_a_query_passes_only_from_our_origin_or_a_tool() {
        assert!(!query_action_refused(None, None, 8000), "the aws CLI");
        assert!(!query_action_refused(Some("http://localhost:8000"), Some("same-origin"), 8000));
        assert!(!query_action_refused(None, Some("none"), 8000), "typed into the address bar");
        assert!(query_action_refused(None, Some("cross-site"), 8000), "an <img> on another site");
        assert!(query_action_refused(None, Some("same-site"), 8000), "a page on another localhost port");
        assert!(query_action_refused(Some("http://evil.example"), None, 8000));
    }

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

    #[test]
    fn changes_from_other_sites_are_refused_and_tools_pass() {
        let own = Some("http://localhost:8000");
        for method in ["POST", "PUT", "DELETE", "PATCH"] {
            assert!(cross_site_refused(method, Some("http://evil.example"), None, 8000), "{method}");
            assert!(cross_site_refused(method, Some("null"), None, 8000), "{method} from a sandboxed frame");
            assert!(cross_site_refused(method, Some("http://localhost:8001"), None, 8000), "{method} other port");
            assert!(cross_site_refused(method, None, Some("cross-site"), 8000), "{method} marked cross-site");
            assert!(!cross_site_refused(method, own, Some("same-origin"), 8000), "{method} from our page");
            assert!(!cross_site_refused(method, None, None, 8000), "{method} from curl");
            assert!(!cross_site_refused(method, None, Some("none"), 8000), "{method} typed by the user");
        }
        for method in ["GET", "HEAD", "OPTIONS"] {
            assert!(!cross_site_refused(method, Some("http://evil.example"), Some("cross-site"), 8000));
        }
    }

    #[test]
    fn only_the_services_own_origin_is_its_own() {
        assert!(origin_is_allowed(None, 8000));
        assert!(origin_is_allowed(Some("http://localhost:8000"), 8000));
        assert!(origin_is_allowed(Some("http://127.0.0.1:8000"), 8000));
        for bad in [
            "http://localhost:8001",
            "https://localhost:8000",
            "http://evil.example",
            "null",
            "http://localhost:8000.evil",
        ] {
            assert!(!origin_is_allowed(Some(bad), 8000), "{bad}");
        }
    }
}
