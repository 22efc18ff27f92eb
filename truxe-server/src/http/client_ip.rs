//! The client's IP address: the socket's peer, or, when the peer is a trusted proxy
//! (`TRUST_PROXY`), the address the proxy headers name. Resolved once per request by the
//! rate-limit middleware and kept in the request extensions ([`ClientIp`]); read by the limiter
//! and by `request_meta` (audit and logs). These headers never decide anything else: the
//! issuer is configuration only.
//!
//! `X-Forwarded-For` is read from the right: each trusted proxy appended the address it saw,
//! so the first address from the right that is not a trusted proxy is the client; addresses to
//! its left were written by the client and prove nothing. `Forwarded` (RFC 7239) is read the
//! same way, from its `for=` parameters, only when there is no `X-Forwarded-For`: proxies such
//! as nginx append to `X-Forwarded-For` and pass a client's own `Forwarded` header along
//! untouched, so preferring `Forwarded` would let any client choose its address. A malformed or
//! unidentified (`unknown`, `_hidden`) hop makes the socket address count.

use std::net::{IpAddr, SocketAddr};

use actix_web::http::header::HeaderMap;
use ipnet::IpNet;

/// The resolved address, in the request extensions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

pub const X_FORWARDED_FOR: &str = "x-forwarded-for";
pub const FORWARDED: &str = "forwarded";

/// The client address of a request from `peer` with `headers`, trusting `proxies`.
pub fn resolve(peer: IpAddr, headers: &HeaderMap, proxies: &[IpNet]) -> IpAddr {
    let peer = peer.to_canonical();
    if !is_trusted(peer, proxies) {
        return peer;
    }
    let hops = if headers.contains_key(X_FORWARDED_FOR) {
        header_list(headers, X_FORWARDED_FOR).map(|list| list.iter().map(|hop| parse_hop(hop)).collect())
    } else if headers.contains_key(FORWARDED) {
        header_list(headers, FORWARDED).map(|list| list.iter().map(|element| forwarded_for(element)).collect())
    } else {
        None
    };
    hops.and_then(|hops: Vec<Option<IpAddr>>| client_of(&hops, proxies)).unwrap_or(peer)
}

fn is_trusted(ip: IpAddr, proxies: &[IpNet]) -> bool {
    proxies.iter().any(|net| net.contains(&ip))
}

/// Every comma-separated member of every field line of `name`; `None` when one is not text.
fn header_list(headers: &HeaderMap, name: &str) -> Option<Vec<String>> {
    let mut items = Vec::new();
    for value in headers.get_all(name) {
        let text = value.to_str().ok()?;
        items.extend(text.split(',').map(|item| item.trim().to_string()));
    }
    Some(items)
}

/// From the right, the first hop that is not a trusted proxy; the leftmost when all are.
/// `None` (the socket address counts) when a hop on the way cannot be read.
fn client_of(hops: &[Option<IpAddr>], proxies: &[IpNet]) -> Option<IpAddr> {
    let mut client = None;
    for hop in hops.iter().rev() {
        let ip = (*hop)?;
        client = Some(ip);
        if !is_trusted(ip, proxies) {
            break;
        }
    }
    client
}

/// An address as proxies write it: `192.0.2.1`, `2001:db8::1`, `192.0.2.1:4711`, `[2001:db8::1]:4711`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    if let Ok(socket) = hop.parse::<SocketAddr>() {
        return Some(socket.ip().to_canonical());
    }
    hop.strip_prefix('[').and_then(|rest| rest.strip_suffix(']')).and_then(|inner| inner.parse::<IpAddr>().ok())
}

/// The address in one `Forwarded` element (`for=192.0.2.60;proto=http;by=203.0.113.43`):
/// `None` when it has no `for=` or its `for=` names no address (`unknown`, `_hidden`).
fn forwarded_for(element: &str) -> Option<IpAddr> {
    for pair in element.split(';') {
        let Some((name, value)) = pair.split_once('=') else { continue };
        if name.trim().eq_ignore_ascii_case("for") {
            let value = value.trim();
            let value = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')).unwrap_or(value);
            return parse_hop(value);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::{HeaderName, HeaderValue};

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).expect("name"),
                HeaderValue::from_str(value).expect("value"),
            );
        }
        map
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("ip")
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|n| crate::config::parse_proxy(n).expect("net")).collect()
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_sends() {
        let h = headers(&[("x-forwarded-for", "203.0.113.9"), ("forwarded", "for=203.0.113.8")]);
        assert_eq!(resolve(ip("198.51.100.1"), &h, &[]), ip("198.51.100.1"));
        assert_eq!(resolve(ip("198.51.100.1"), &h, &nets(&["127.0.0.1"])), ip("198.51.100.1"));
    }

    #[test]
    fn x_forwarded_for_is_read_from_the_right_past_trusted_proxies() {
        let proxies = nets(&["127.0.0.1", "10.0.0.0/8"]);
        let peer = ip("127.0.0.1");
        let h = headers(&[("x-forwarded-for", "1.1.1.1, 203.0.113.9, 10.1.2.3")]);
        assert_eq!(resolve(peer, &h, &proxies), ip("203.0.113.9"), "1.1.1.1 was written by the client");
        let h = headers(&[("x-forwarded-for", "1.1.1.1"), ("x-forwarded-for", "203.0.113.9")]);
        assert_eq!(resolve(peer, &h, &proxies), ip("203.0.113.9"), "several field lines are one list");
        let h = headers(&[("x-forwarded-for", "10.0.0.5, 10.0.0.6")]);
        assert_eq!(resolve(peer, &h, &proxies), ip("10.0.0.5"), "all trusted: the leftmost");
        let h = headers(&[("x-forwarded-for", "[2001:db8::7]:4711, 192.0.2.1:80")]);
        assert_eq!(resolve(peer, &h, &proxies), ip("192.0.2.1"));
        let h = headers(&[("x-forwarded-for", "2001:db8::7")]);
        assert_eq!(resolve(peer, &h, &proxies), ip("2001:db8::7"));
        assert_eq!(resolve(ip("::ffff:127.0.0.1"), &h, &proxies), ip("2001:db8::7"), "IPv4-mapped peer");
        assert_eq!(resolve(peer, &headers(&[]), &proxies), peer, "no header: the proxy itself");
    }

    #[test]
    fn malformed_proxy_headers_fall_back_to_the_socket_address() {
        let proxies = nets(&["127.0.0.1/32"]);
        let peer = ip("127.0.0.1");
        for bad in ["", "not-an-ip", "203.0.113.9, garbage", "203.0.113.9,,", "unknown", "300.1.1.1"] {
            let h = headers(&[("x-forwarded-for", bad)]);
            assert_eq!(resolve(peer, &h, &proxies), peer, "{bad:?}");
        }
        for bad in ["for=unknown", "for=_hidden", "proto=https", "for=\"[2001:db8::1\"", "for="] {
            let h = headers(&[("forwarded", bad)]);
            assert_eq!(resolve(peer, &h, &proxies), peer, "{bad:?}");
        }
        // A trusted hop behind an unreadable one does not help: the socket address counts.
        let h = headers(&[("x-forwarded-for", "203.0.113.9, junk, 127.0.0.1")]);
        assert_eq!(resolve(peer, &h, &proxies), peer);
    }

    #[test]
    fn forwarded_is_read_when_there_is_no_x_forwarded_for() {
        let proxies = nets(&["127.0.0.1/32", "198.51.100.0/24"]);
        let peer = ip("127.0.0.1");
        let h = headers(&[("forwarded", "for=192.0.2.60;proto=http;by=203.0.113.43")]);
        assert_eq!(resolve(peer, &h, &proxies), ip("192.0.2.60"));
        let h = headers(&[("forwarded", "for=1.2.3.4, For=\"[2001:db8:cafe::17]:4711\", for=198.51.100.17")]);
        assert_eq!(resolve(peer, &h, &proxies), ip("2001:db8:cafe::17"));
        let h = headers(&[("forwarded", "for=192.0.2.43:4711"), ("forwarded", "for=\"198.51.100.3\"")]);
        assert_eq!(resolve(peer, &h, &proxies), ip("192.0.2.43"));
        // Both present: X-Forwarded-For, which the proxy wrote, wins over a passed-through Forwarded.
        let h = headers(&[("forwarded", "for=192.0.2.60"), ("x-forwarded-for", "203.0.113.9")]);
        assert_eq!(resolve(peer, &h, &proxies), ip("203.0.113.9"));
    }
}
