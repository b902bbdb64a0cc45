//! Where `webhook` actions may send: the SSRF policy.
//!
//! Event data reaches webhook URLs and headers through templates, so a rendered request is
//! checked twice before it is sent: the URL as text ([`check_rendered_url`]: scheme, no
//! credentials, host in the allow-list and equal to the template's own host), and the
//! addresses its host resolves to ([`check_resolved`]: nothing private, link-local, metadata
//! or otherwise not on the public internet). The caller must then connect to exactly the
//! addresses returned (e.g. reqwest's `resolve_to_addrs`), so DNS cannot answer differently
//! between the check and the connection.
//!
//! The SmartEmailing base URL is the operator's own setting and is not subject to this policy.
//!
//! Allow-list entries are host names, compared case-insensitively without a trailing dot:
//! `collector.example.com` matches only itself; `*.example.com` matches any name below
//! `example.com` (`a.example.com`, `a.b.example.com`) but not `example.com` itself. An IP
//! literal may be listed, and still has to pass the address check. Ports are not restricted.
//! With `allow_loopback_http`, loopback targets (`localhost`, `127.0.0.0/8`, `::1`) are
//! allowed without being listed, over http or https.

use serde::Deserialize;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;
use url::{Host, Url};

/// The longest header value a template may render.
pub const MAX_HEADER_VALUE_BYTES: usize = 8 * 1024;
/// The longest rendered URL.
pub const MAX_URL_BYTES: usize = 8 * 1024;
/// How long a DNS lookup may take.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// The `outbound` section of the config.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboundPolicy {
    /// Hosts `webhook` actions may call: exact names, or `*.example.com` for names below one.
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
    /// Permits http:// and loopback targets (tests, local development).
    #[serde(default)]
    pub allow_loopback_http: bool,
}

/// Why an outbound request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OutboundError {
    /// The URL does not parse.
    #[error("the webhook URL is not a valid absolute URL: {0}")]
    BadUrl(String),
    /// The URL is longer than allowed.
    #[error("the webhook URL is longer than {MAX_URL_BYTES} bytes")]
    UrlTooLong,
    /// Not https (or http to loopback when that is allowed).
    #[error("the webhook URL must use https (got `{0}`); http is allowed only to loopback with outbound.allow_loopback_http")]
    Scheme(String),
    /// The URL carries a user name or password.
    #[error("the webhook URL must not carry credentials; use the action's `auth` setting")]
    Credentials,
    /// The host is not in `outbound.allowed_hosts`.
    #[error("`{0}` is not in outbound.allowed_hosts")]
    HostNotAllowed(String),
    /// The rendered host differs from the host written in the template.
    #[error("the rendered URL's host `{rendered}` differs from the template's host `{template}`; event data cannot change where a webhook goes")]
    HostChanged {
        /// The host written in the template.
        template: String,
        /// The host the rendering produced.
        rendered: String,
    },
    /// The host resolved to an address the relay does not call.
    #[error("`{host}` resolves to {addr}, which is {why}; the relay only calls public addresses")]
    ForbiddenAddress {
        /// The host name as written.
        host: String,
        /// The offending address.
        addr: IpAddr,
        /// What kind of address it is.
        why: &'static str,
    },
    /// The host could not be resolved.
    #[error("`{0}` could not be resolved")]
    Unresolved(String),
    /// A header value has a control character (header injection).
    #[error("a header value must not contain control characters such as CR or LF")]
    HeaderControl,
    /// A header value is too long.
    #[error("a header value is longer than {MAX_HEADER_VALUE_BYTES} bytes")]
    HeaderTooLong,
}

/// The host of a URL template when it is written out (no template syntax before the path),
/// lower-cased; `None` when the host itself is templated or the URL does not parse.
pub fn static_host(template_url: &str) -> Option<String> {
    let after_scheme = template_url.split_once("://")?.1;
    let authority_end = after_scheme
        .find(['/', '?', '#'])
        .unwrap_or(after_scheme.len());
    let authority = &after_scheme[..authority_end];
    if authority.contains("{{") || authority.contains("{%") || authority.contains("{#") {
        return None;
    }
    let url = Url::parse(&format!(
        "{}://{}/",
        template_url.split_once("://")?.0,
        authority
    ))
    .ok()?;
    url.host_str().map(normalise_host)
}

/// Checks a rendered webhook URL against the policy; returns the parsed URL to send to.
///
/// `template_static_host` is [`static_host`] of the URL template: when the template names
/// its host, the rendered URL must keep it. Send the returned `Url`, not the text, so the
/// request goes where this check looked.
pub fn check_rendered_url(
    template_static_host: Option<&str>,
    rendered: &str,
    policy: &OutboundPolicy,
) -> Result<Url, OutboundError> {
    if rendered.len() > MAX_URL_BYTES {
        return Err(OutboundError::UrlTooLong);
    }
    let url = Url::parse(rendered.trim()).map_err(|e| OutboundError::BadUrl(e.to_string()))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(OutboundError::Credentials);
    }
    let host = match url.host() {
        Some(h) => h,
        None => return Err(OutboundError::BadUrl("it has no host".into())),
    };
    let name = normalise_host(&host_text(&host));
    let loopback = is_loopback_host(&host);
    match url.scheme() {
        "https" => {}
        "http" if loopback && policy.allow_loopback_http => {}
        other => return Err(OutboundError::Scheme(other.to_string())),
    }
    if let Some(template) = template_static_host {
        let template = normalise_host(template.trim_start_matches('[').trim_end_matches(']'));
        if template != name {
            return Err(OutboundError::HostChanged {
                template,
                rendered: name,
            });
        }
    }
    let listed = policy
        .allowed_hosts
        .iter()
        .any(|entry| host_matches(entry, &name));
    let local_dev = loopback && policy.allow_loopback_http;
    if !(listed || local_dev) {
        return Err(OutboundError::HostNotAllowed(name));
    }
    Ok(url)
}

/// Resolves `host` and checks every address; returns them all for the connection to use.
///
/// Every address must pass, not just one: a name that resolves to a public and a private
/// address could otherwise be connected to the private one.
pub async fn check_resolved(
    host: &str,
    port: u16,
    policy: &OutboundPolicy,
) -> Result<Vec<SocketAddr>, OutboundError> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<SocketAddr> = if let Ok(ip) = bare.parse::<IpAddr>() {
        vec![SocketAddr::new(ip, port)]
    } else {
        match tokio::time::timeout(LOOKUP_TIMEOUT, tokio::net::lookup_host((bare, port))).await {
            Ok(Ok(found)) => found.collect(),
            _ => return Err(OutboundError::Unresolved(host.to_string())),
        }
    };
    if addrs.is_empty() {
        return Err(OutboundError::Unresolved(host.to_string()));
    }
    for addr in &addrs {
        check_ip(addr.ip(), policy).map_err(|why| OutboundError::ForbiddenAddress {
            host: host.to_string(),
            addr: addr.ip(),
            why,
        })?;
    }
    Ok(addrs)
}

/// Checks one address: `Err(why)` for anything but a public unicast address (loopback
/// passes when the policy allows it).
pub fn check_ip(ip: IpAddr, policy: &OutboundPolicy) -> Result<(), &'static str> {
    match classify(ip) {
        None => Ok(()),
        Some(Kind::Loopback) if policy.allow_loopback_http => Ok(()),
        Some(kind) => Err(kind.describe()),
    }
}

/// Checks a rendered header value: no control characters (CR, LF, NUL, tab, DEL, C1), bounded length.
pub fn check_header_value(value: &str) -> Result<(), OutboundError> {
    if value.len() > MAX_HEADER_VALUE_BYTES {
        return Err(OutboundError::HeaderTooLong);
    }
    if value.chars().any(char::is_control) {
        return Err(OutboundError::HeaderControl);
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Unspecified,
    Loopback,
    Private,
    LinkLocal,
    SharedNat,
    Multicast,
    Broadcast,
    Reserved,
    Documentation,
    UniqueLocal,
}

impl Kind {
    fn describe(self) -> &'static str {
        match self {
            Self::Unspecified => "an unspecified address",
            Self::Loopback => "a loopback address (allowed only with outbound.allow_loopback_http)",
            Self::Private => "a private network address",
            Self::LinkLocal => "a link-local address (this includes cloud metadata services)",
            Self::SharedNat => "a carrier-grade NAT address",
            Self::Multicast => "a multicast address",
            Self::Broadcast => "the broadcast address",
            Self::Reserved => "a reserved address",
            Self::Documentation => "a documentation address",
            Self::UniqueLocal => "an IPv6 unique local address",
        }
    }
}

/// What is wrong with an address, or `None` for a public unicast one.
fn classify(ip: IpAddr) -> Option<Kind> {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(ip: Ipv4Addr) -> Option<Kind> {
    let [a, b, c, _] = ip.octets();
    Some(match (a, b, c) {
        (0, _, _) => Kind::Unspecified,
        (127, _, _) => Kind::Loopback,
        (10, _, _) => Kind::Private,
        (172, 16..=31, _) => Kind::Private,
        (192, 168, _) => Kind::Private,
        (169, 254, _) => Kind::LinkLocal,
        (100, 64..=127, _) => Kind::SharedNat,
        // IETF protocol assignments, benchmarking.
        (192, 0, 0) | (198, 18..=19, _) => Kind::Reserved,
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => Kind::Documentation,
        (224..=239, _, _) => Kind::Multicast,
        (255, 255, 255) if ip == Ipv4Addr::BROADCAST => Kind::Broadcast,
        (240..=255, _, _) => Kind::Reserved,
        _ => return None,
    })
}

fn classify_v6(ip: Ipv6Addr) -> Option<Kind> {
    if ip.is_unspecified() {
        return Some(Kind::Unspecified);
    }
    if ip.is_loopback() {
        return Some(Kind::Loopback);
    }
    let s = ip.segments();
    // Addresses that carry an IPv4 address are judged by it: mapped ::ffff:0:0/96,
    // compatible ::/96, NAT64 64:ff9b::/96 and 64:ff9b:1::/48, 6to4 2002::/16.
    let embedded =
        |hi: u16, lo: u16| Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8);
    if s[..6] == [0, 0, 0, 0, 0, 0xffff] {
        return classify_v4(embedded(s[6], s[7]));
    }
    if s[..6] == [0; 6] {
        // IPv4-compatible, deprecated since 2006: nothing legitimate uses it.
        return Some(Kind::Reserved);
    }
    if (s[0] == 0x64 && s[1] == 0xff9b && (s[2..6] == [0; 4] || s[2] == 1)) || s[0] == 0x2002 {
        let v4 = if s[0] == 0x2002 {
            embedded(s[1], s[2])
        } else {
            embedded(s[6], s[7])
        };
        return classify_v4(v4);
    }
    Some(match s[0] {
        0xfc00..=0xfdff => Kind::UniqueLocal,
        0xfe80..=0xfebf => Kind::LinkLocal,
        // Deprecated site-local, still routed inside some networks.
        0xfec0..=0xfeff => Kind::Private,
        0xff00..=0xffff => Kind::Multicast,
        0x2001 if s[1] == 0x0db8 => Kind::Documentation,
        // Discard-only 100::/64.
        0x0100 if s[1..4] == [0; 3] => Kind::Reserved,
        _ => return None,
    })
}

fn is_loopback_host(host: &Host<&str>) -> bool {
    match host {
        Host::Domain(d) => {
            let d = normalise_host(d);
            d == "localhost" || d.ends_with(".localhost")
        }
        Host::Ipv4(ip) => ip.is_loopback(),
        Host::Ipv6(ip) => {
            ip.is_loopback() || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

fn host_text(host: &Host<&str>) -> String {
    match host {
        Host::Domain(d) => (*d).to_string(),
        Host::Ipv4(ip) => ip.to_string(),
        Host::Ipv6(ip) => ip.to_string(),
    }
}

fn normalise_host(host: &str) -> String {
    host.trim_end_matches('.').to_ascii_lowercase()
}

fn host_matches(entry: &str, host: &str) -> bool {
    let entry = entry.trim();
    match entry.strip_prefix("*.") {
        Some(parent) => host
            .strip_suffix(&ascii_host(parent))
            .is_some_and(|sub| sub.len() > 1 && sub.ends_with('.')),
        None => ascii_host(entry) == host,
    }
}

/// An allow-list entry in the form URLs' hosts take: lower case, IDNA (punycode) applied,
/// IPv6 without brackets, no trailing dot.
fn ascii_host(entry: &str) -> String {
    match Host::parse(entry) {
        Ok(Host::Domain(d)) => normalise_host(&d),
        Ok(Host::Ipv4(ip)) => ip.to_string(),
        Ok(Host::Ipv6(ip)) => ip.to_string(),
        Err(_) => normalise_host(entry),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(hosts: &[&str], loopback: bool) -> OutboundPolicy {
        OutboundPolicy {
            allowed_hosts: hosts.iter().map(|h| h.to_string()).collect(),
            allow_loopback_http: loopback,
        }
    }

    fn strict() -> OutboundPolicy {
        policy(&["collector.example.com", "*.hooks.example.org"], false)
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_config_section_parses() {
        let p: OutboundPolicy = yaml_serde::from_str(
            "allowed_hosts: [collector.example.com]\nallow_loopback_http: false\n",
        )
        .unwrap();
        assert_eq!(p, policy(&["collector.example.com"], false));
        assert_eq!(
            yaml_serde::from_str::<OutboundPolicy>("{}").unwrap(),
            OutboundPolicy::default()
        );
        assert!(yaml_serde::from_str::<OutboundPolicy>("allowed_host: [x]").is_err());
    }

    #[test]
    fn an_allowed_https_url_passes() {
        let url = check_rendered_url(
            Some("collector.example.com"),
            "https://Collector.Example.com./in?x=1",
            &strict(),
        )
        .unwrap();
        assert_eq!(url.host_str(), Some("collector.example.com."));
        assert!(check_rendered_url(None, "https://a.b.hooks.example.org:8443/", &strict()).is_ok());
    }

    #[test]
    fn hosts_outside_the_list_are_refused() {
        for url in [
            "https://example.com/",
            "https://hooks.example.org/",
            "https://evilhooks.example.org/",
            "https://collector.example.com.evil.net/",
            "https://169.254.169.254/latest/meta-data/",
            "https://localhost/",
        ] {
            assert!(
                matches!(
                    check_rendered_url(None, url, &strict()),
                    Err(OutboundError::HostNotAllowed(_))
                ),
                "{url}"
            );
        }
    }

    #[test]
    fn a_rendered_host_must_equal_the_templates_host() {
        for url in [
            "https://a.hooks.example.org/",
            "https://collector.example.com@a.hooks.example.org/",
            "https://a.hooks.example.org\\@collector.example.com/",
            "https://a.hooks.example.org#@collector.example.com/",
        ] {
            let err =
                check_rendered_url(Some("collector.example.com"), url, &strict()).unwrap_err();
            assert!(
                matches!(
                    err,
                    OutboundError::HostChanged { .. } | OutboundError::Credentials
                ),
                "{url}: {err}"
            );
        }
    }

    #[test]
    fn static_hosts_are_read_from_templates() {
        assert_eq!(
            static_host("https://Collector.example.com/{{ data.path }}").as_deref(),
            Some("collector.example.com")
        );
        assert_eq!(
            static_host("https://x.example.com:8443?q={{ a }}").as_deref(),
            Some("x.example.com")
        );
        assert_eq!(static_host("https://{{ data.host }}/in"), None);
        assert_eq!(static_host("https://x{{ data.suffix }}.example.com/"), None);
        assert_eq!(static_host("{{ data.url }}"), None);
        assert_eq!(static_host("http://[::1]:8080/x").as_deref(), Some("[::1]"));
    }

    #[test]
    fn http_and_other_schemes_are_refused() {
        for url in [
            "http://collector.example.com/",
            "ftp://collector.example.com/",
            "file:///etc/passwd",
            "gopher://collector.example.com/",
        ] {
            let err = check_rendered_url(None, url, &strict()).unwrap_err();
            assert!(
                matches!(err, OutboundError::Scheme(_) | OutboundError::BadUrl(_)),
                "{url}: {err}"
            );
        }
        // Even with loopback allowed, http goes to loopback only.
        let dev = policy(&["collector.example.com"], true);
        assert!(matches!(
            check_rendered_url(None, "http://collector.example.com/", &dev),
            Err(OutboundError::Scheme(_))
        ));
    }

    #[test]
    fn loopback_http_needs_the_setting() {
        let dev = policy(&[], true);
        for url in [
            "http://127.0.0.1:8080/hook",
            "http://localhost:3000/",
            "http://[::1]/",
            "https://127.0.0.2/",
        ] {
            assert!(check_rendered_url(None, url, &dev).is_ok(), "{url}");
            assert!(
                check_rendered_url(None, url, &policy(&[], false)).is_err(),
                "{url}"
            );
        }
        assert!(check_rendered_url(Some("[::1]"), "http://[::1]:9/", &dev).is_ok());
    }

    #[test]
    fn credentials_in_urls_are_refused() {
        assert_eq!(
            check_rendered_url(None, "https://user:pw@collector.example.com/", &strict()),
            Err(OutboundError::Credentials)
        );
    }

    #[test]
    fn garbage_urls_are_refused() {
        for url in [
            "",
            "collector.example.com/x",
            "https://",
            "https://exa mple.com/",
        ] {
            assert!(check_rendered_url(None, url, &strict()).is_err(), "{url:?}");
        }
        let long = format!(
            "https://collector.example.com/{}",
            "a".repeat(MAX_URL_BYTES)
        );
        assert_eq!(
            check_rendered_url(None, &long, &strict()),
            Err(OutboundError::UrlTooLong)
        );
    }

    #[test]
    fn private_and_special_addresses_are_refused() {
        let p = OutboundPolicy::default();
        for addr in [
            "0.0.0.0",
            "127.0.0.1",
            "127.255.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "169.254.0.1",
            "100.64.0.1",
            "100.127.255.254",
            "224.0.0.1",
            "239.255.255.250",
            "255.255.255.255",
            "240.0.0.1",
            "192.0.2.1",
            "198.18.0.1",
            "192.0.0.8",
            "::",
            "::1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "febf::1",
            "fec0::1",
            "ff02::1",
            "2001:db8::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "::ffff:192.168.0.1",
            "::127.0.0.1",
            "::10.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b::10.0.0.1",
            "2002:a9fe:a9fe::1",
            "2002:7f00:1::1",
            "100::1",
        ] {
            assert!(check_ip(ip(addr), &p).is_err(), "{addr}");
        }
        assert!(check_ip(ip("169.254.169.254"), &p)
            .unwrap_err()
            .contains("metadata"));
    }

    #[test]
    fn public_addresses_pass() {
        let p = OutboundPolicy::default();
        for addr in [
            "1.1.1.1",
            "8.8.8.8",
            "172.15.255.255",
            "172.32.0.1",
            "100.63.255.255",
            "100.128.0.1",
            "169.253.1.1",
            "192.169.0.1",
            "2606:4700:4700::1111",
            "2a00:1450::1",
            "::ffff:1.1.1.1",
            "64:ff9b::808:808",
            "2002:808:808::1",
        ] {
            assert_eq!(check_ip(ip(addr), &p), Ok(()), "{addr}");
        }
    }

    #[test]
    fn loopback_addresses_pass_only_with_the_setting() {
        let dev = policy(&[], true);
        for addr in ["127.0.0.1", "::1", "::ffff:127.0.0.1"] {
            assert_eq!(check_ip(ip(addr), &dev), Ok(()), "{addr}");
        }
        // The setting opens loopback, not the rest of the private ranges.
        for addr in ["10.0.0.1", "169.254.169.254", "fd00::1"] {
            assert!(check_ip(ip(addr), &dev).is_err(), "{addr}");
        }
    }

    #[tokio::test]
    async fn resolved_literals_are_checked() {
        let p = OutboundPolicy::default();
        let err = check_resolved("169.254.169.254", 80, &p).await.unwrap_err();
        assert!(
            matches!(err, OutboundError::ForbiddenAddress { .. }),
            "{err}"
        );
        assert!(err.to_string().contains("169.254.169.254"));
        assert!(check_resolved("[::ffff:10.0.0.1]", 443, &p).await.is_err());
        let ok = check_resolved("1.1.1.1", 443, &p).await.unwrap();
        assert_eq!(ok, vec!["1.1.1.1:443".parse().unwrap()]);
    }

    #[tokio::test]
    async fn localhost_resolves_to_loopback_and_is_refused_unless_allowed() {
        let err = check_resolved("localhost", 80, &OutboundPolicy::default())
            .await
            .unwrap_err();
        assert!(
            matches!(err, OutboundError::ForbiddenAddress { .. }),
            "{err}"
        );
        let addrs = check_resolved("localhost", 80, &policy(&[], true))
            .await
            .unwrap();
        assert!(
            addrs.iter().all(|a| a.ip().is_loopback() && a.port() == 80),
            "{addrs:?}"
        );
    }

    #[test]
    fn header_values_with_control_characters_are_refused() {
        assert_eq!(check_header_value("Bearer abc; q=\"x\" ž"), Ok(()));
        for bad in [
            "a\r\nX-Admin: 1",
            "a\nb",
            "a\rb",
            "a\0b",
            "a\tb",
            "a\u{7f}",
            "a\u{85}b",
        ] {
            assert_eq!(
                check_header_value(bad),
                Err(OutboundError::HeaderControl),
                "{bad:?}"
            );
        }
        assert_eq!(
            check_header_value(&"a".repeat(MAX_HEADER_VALUE_BYTES + 1)),
            Err(OutboundError::HeaderTooLong)
        );
    }

    #[test]
    fn wildcards_match_names_below_only() {
        assert!(host_matches("*.example.com", "a.example.com"));
        assert!(host_matches("*.Example.com.", "a.b.example.com"));
        assert!(!host_matches("*.example.com", "example.com"));
        assert!(!host_matches("*.example.com", "badexample.com"));
        assert!(!host_matches("*.example.com", ".example.com"));
        assert!(host_matches(
            "collector.example.com",
            "collector.example.com"
        ));
        assert!(!host_matches(
            "collector.example.com",
            "x.collector.example.com"
        ));
    }
}
