//! Where a webhook may go. A template's author chooses the URL, and the notify function runs
//! inside the stack's network with its credentials: a URL naming a loopback, link-local (the
//! instance metadata service at 169.254.169.254), private or unique-local address would let a
//! template reach what only the stack should. Such destinations are refused, checked on every
//! address the host resolves to at send time (and the connection goes to those addresses only),
//! unless the stack allows private targets (`WebhookAllowPrivateTargets`, for receivers on a
//! private network).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Why `ip` is not a public destination, if it is not.
pub fn private_address(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => private_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => private_v4(v4),
            None => private_v6(v6),
        },
    }
}

fn private_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, ..] = ip.octets();
    if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_link_local() {
        Some("link-local (e.g. the instance metadata service)")
    } else if ip.is_private() {
        Some("private")
    } else if a == 100 && (64..128).contains(&b) {
        Some("shared address space (carrier-grade NAT)")
    } else if ip.is_unspecified() || a == 0 {
        Some("unspecified")
    } else if ip.is_broadcast() || ip.is_multicast() {
        Some("broadcast or multicast")
    } else {
        None
    }
}

fn private_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let first = ip.segments()[0];
    if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_unspecified() {
        Some("unspecified")
    } else if first & 0xffc0 == 0xfe80 {
        Some("link-local")
    } else if first & 0xfe00 == 0xfc00 {
        Some("unique-local")
    } else if ip.is_multicast() {
        Some("multicast")
    } else {
        None
    }
}

/// Why a webhook may not go to `addrs` (what its host resolved to), if it may not.
pub fn refusal(host: &str, addrs: &[SocketAddr], allow_private: bool) -> Option<String> {
    if allow_private {
        return None;
    }
    addrs.iter().find_map(|a| {
        private_address(a.ip()).map(|why| {
            format!(
                "webhook host {host} is {ip}, a {why} address: refused (a stack that must reach private receivers sets WebhookAllowPrivateTargets)",
                ip = a.ip()
            )
        })
    })
}

/// Why a webhook cannot be sent now.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unsendable {
    /// Its host does not resolve now (worth trying again later).
    #[error("{0}")]
    Unresolved(String),
    /// It may never be sent there (no host, an internal address).
    #[error("{0}")]
    Refused(String),
}

/// The addresses `url`'s host may be reached at, resolved now and checked; the caller connects
/// to these only (no second lookup that could answer differently).
pub async fn resolve(
    url: &reqwest::Url,
    allow_private: bool,
) -> Result<Vec<SocketAddr>, Unsendable> {
    let refused = |m: String| Unsendable::Refused(m);
    let host = url
        .host_str()
        .ok_or_else(|| refused("the webhook URL has no host".into()))?;
    let port = url
        .port_or_known_default()
        .ok_or_else(|| refused("the webhook URL has no port".into()))?;
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<SocketAddr> = match bare.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => tokio::net::lookup_host((bare, port))
            .await
            .map_err(|e| {
                Unsendable::Unresolved(format!("cannot resolve webhook host {host}: {e}"))
            })?
            .collect(),
    };
    if addrs.is_empty() {
        return Err(refused(format!("webhook host {host} has no address")));
    }
    match refusal(host, &addrs, allow_private) {
        Some(why) => Err(refused(why)),
        None => Ok(addrs),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_addresses_are_named_and_public_ones_pass() {
        for (ip, why) in [
            ("127.0.0.1", "loopback"),
            ("169.254.169.254", "link-local"),
            ("10.1.2.3", "private"),
            ("172.16.0.1", "private"),
            ("192.168.1.1", "private"),
            ("100.64.0.1", "shared address space"),
            ("0.0.0.0", "unspecified"),
            ("::1", "loopback"),
            ("fe80::1", "link-local"),
            ("fd00::1", "unique-local"),
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:169.254.169.254", "link-local"),
        ] {
            let got = private_address(ip.parse().unwrap());
            assert!(got.is_some_and(|g| g.starts_with(why)), "{ip}: {got:?}");
        }
        for ip in [
            "93.184.216.34",
            "2606:2800:220:1::1",
            "100.128.0.1",
            "172.32.0.1",
        ] {
            assert_eq!(private_address(ip.parse().unwrap()), None, "{ip}");
        }
    }

    #[tokio::test]
    async fn a_url_to_an_internal_address_is_refused_unless_the_stack_allows_it() {
        let url: reqwest::Url = "http://169.254.169.254/latest/meta-data/".parse().unwrap();
        let Err(Unsendable::Refused(e)) = resolve(&url, false).await else {
            panic!("the metadata address is refused");
        };
        assert!(e.contains("169.254.169.254, a link-local"), "{e}");
        assert!(e.contains("WebhookAllowPrivateTargets"), "{e}");
        let url: reqwest::Url = "http://localhost:9/hook".parse().unwrap();
        let Err(Unsendable::Refused(e)) = resolve(&url, false).await else {
            panic!("a name resolving to loopback is refused");
        };
        assert!(e.contains("loopback"), "a name resolving to loopback: {e}");
        let url: reqwest::Url = "http://[::1]:8080/hook".parse().unwrap();
        assert!(resolve(&url, false).await.is_err());
        let addrs = resolve(&url, true).await.unwrap();
        assert_eq!(addrs, vec!["[::1]:8080".parse().unwrap()]);
    }
}
