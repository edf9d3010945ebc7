//! Checks every request passes before it reaches a route: the `Host` it names (against DNS
//! rebinding) and, for requests that change state, the `Origin` it comes from (against
//! cross-site requests).
//!
//! - **Host.** A web page on `evil.example` whose name is re-pointed at 127.0.0.1 reaches this
//!   server with `Host: evil.example:7860`. Only these names are served: the bound IP address
//!   (any IP address when bound to all interfaces, `0.0.0.0` or `::`), the loopback addresses and
//!   `localhost` when the server listens on loopback (or on all interfaces), and the names the
//!   operator allows (`rlm serve --allow-host NAME`). An IP address cannot be re-pointed, so an IP
//!   address in `Host` is never a rebinding.
//! - **Origin.** A page on another site can send a bodiless `POST` (a form, `fetch` with
//!   `mode: "no-cors"`) that cancels a run. Requests other than `GET`, `HEAD` and `OPTIONS` are
//!   refused when they carry an `Origin` other than the server's own (the scheme and the `Host`
//!   of the request, or an allowed name), `Origin: null`, or a `Sec-Fetch-Site` of `cross-site` or
//!   `same-site`. Clients that are not browsers (curl, the `openai` client) send no `Origin` and
//!   pass.

use std::net::IpAddr;

use axum::http::uri::Authority;
use axum::http::{HeaderMap, Method, StatusCode, header};

use crate::ApiError;

/// Which hosts and origins this server answers.
#[derive(Debug, Clone)]
pub struct HostCheck {
    bound: IpAddr,
    names: Vec<String>,
}

impl HostCheck {
    /// For a server bound to `bound` that also answers to `names` (host names, no port).
    pub fn new(bound: IpAddr, names: &[String]) -> Self {
        Self {
            bound,
            names: names
                .iter()
                .map(|n| n.trim().trim_end_matches('.').to_ascii_lowercase())
                .filter(|n| !n.is_empty())
                .collect(),
        }
    }

    /// The host part (no port, no brackets, lower case) of a `Host` value, if it is one.
    fn host_of(authority: &str) -> Option<String> {
        let a: Authority = authority.parse().ok()?;
        if a.as_str().contains('@') {
            return None;
        }
        let h = a.host();
        let h = h
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(h);
        Some(h.trim_end_matches('.').to_ascii_lowercase())
    }

    fn allows_name(&self, host: &str) -> bool {
        if self.names.iter().any(|n| n == host) {
            return true;
        }
        let local = self.bound.is_loopback() || self.bound.is_unspecified();
        match host.parse::<IpAddr>() {
            Ok(ip) => {
                self.bound.is_unspecified()
                    || ip == self.bound
                    || (ip.is_loopback() && self.bound.is_loopback())
            }
            Err(_) => local && host == "localhost",
        }
    }

    /// Whether a request naming `host` (a `Host` header value) is for this server.
    pub fn allows_host(&self, host: &str) -> bool {
        Self::host_of(host).is_some_and(|h| self.allows_name(&h))
    }

    /// Whether a state-changing request with these headers, for `host`, comes from this server's
    /// own page (or from a client that is not a browser).
    pub fn allows_origin(&self, host: &str, headers: &HeaderMap) -> bool {
        let fetch_site = headers
            .get("sec-fetch-site")
            .map(|v| v.to_str().unwrap_or("cross-site").to_ascii_lowercase());
        if matches!(fetch_site.as_deref(), Some("cross-site" | "same-site")) {
            return false;
        }
        let Some(origin) = headers.get(header::ORIGIN) else {
            return true;
        };
        let Ok(origin) = origin.to_str() else {
            return false;
        };
        let Some(authority) = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"))
        else {
            return false; // `null`, or another scheme
        };
        if authority.eq_ignore_ascii_case(host) {
            return true;
        }
        Self::host_of(authority).is_some_and(|h| self.names.contains(&h))
    }

    /// Check one request: `Err` is the refusal to send.
    pub fn check(
        &self,
        method: &Method,
        host: Option<&str>,
        headers: &HeaderMap,
    ) -> Result<(), ApiError> {
        let Some(host) = host else {
            return Err(ApiError::bad("the request has no Host header"));
        };
        if !self.allows_host(host) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                format!(
                    "this server does not answer to the host name {host:?} (a guard against DNS \
                     rebinding); use its address, or start it with `rlm serve --allow-host NAME`"
                ),
            ));
        }
        let safe = matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
        if !safe && !self.allows_origin(host, headers) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "cross-site request refused: only this server's own page may change its state \
                 (the Origin is another site's)",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn hosts() {
        let lo = HostCheck::new("127.0.0.1".parse().unwrap(), &["rlm.example".into()]);
        for ok in [
            "127.0.0.1:7860",
            "127.0.0.1",
            "localhost:7860",
            "LOCALHOST:1",
            "[::1]:7860",
            "127.0.0.2:7860",
            "rlm.example",
            "RLM.example.:443",
        ] {
            assert!(lo.allows_host(ok), "{ok}");
        }
        for bad in [
            "evil.example:7860",
            "evil.example",
            "10.0.0.1:7860",
            "localhost.evil.example",
            "127.0.0.1.evil.example",
            "user@127.0.0.1",
            "",
            "a b",
        ] {
            assert!(!lo.allows_host(bad), "{bad}");
        }
        let any = HostCheck::new("0.0.0.0".parse().unwrap(), &[]);
        assert!(any.allows_host("192.168.1.5:7860") && any.allows_host("localhost:7860"));
        assert!(!any.allows_host("evil.example:7860"));
        let lan = HostCheck::new("192.168.1.5".parse().unwrap(), &[]);
        assert!(lan.allows_host("192.168.1.5:7860"));
        assert!(!lan.allows_host("localhost:7860") && !lan.allows_host("127.0.0.1:7860"));
    }

    #[test]
    fn origins() {
        let c = HostCheck::new("127.0.0.1".parse().unwrap(), &["rlm.example".into()]);
        let host = "127.0.0.1:7860";
        assert!(c.allows_origin(host, &headers(&[])));
        assert!(c.allows_origin(host, &headers(&[("origin", "http://127.0.0.1:7860")])));
        assert!(c.allows_origin(host, &headers(&[("origin", "https://rlm.example")])));
        assert!(c.allows_origin(
            host,
            &headers(&[
                ("sec-fetch-site", "same-origin"),
                ("origin", "http://127.0.0.1:7860")
            ])
        ));
        for bad in [
            vec![("origin", "http://evil.example")],
            vec![("origin", "http://127.0.0.1:7861")],
            vec![("origin", "null")],
            vec![("origin", "file://")],
            vec![("sec-fetch-site", "cross-site")],
            vec![
                ("sec-fetch-site", "same-site"),
                ("origin", "http://127.0.0.1:7860"),
            ],
        ] {
            assert!(!c.allows_origin(host, &headers(&bad)), "{bad:?}");
        }
        let get = c.check(
            &Method::GET,
            Some(host),
            &headers(&[("origin", "http://evil.example")]),
        );
        assert!(get.is_ok(), "reads are not state changes");
        let post = c.check(
            &Method::POST,
            Some(host),
            &headers(&[("origin", "http://evil.example")]),
        );
        assert_eq!(post.unwrap_err().status, StatusCode::FORBIDDEN);
        assert!(c.check(&Method::GET, None, &HeaderMap::new()).is_err());
    }
}
