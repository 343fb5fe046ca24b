//! How a request reaches its server: the TLS configuration of https requests and the
//! forward proxy (`upload.tls`, `upload.proxy`), the same for the uploads and the webhook.
//! Proxy environment variables are never read: without `upload.proxy` requests go direct.

use std::sync::Arc;

use attohttpc::header::PROXY_AUTHORIZATION;
use attohttpc::{ProxySettings, RequestBuilder};

use crate::config::Endpoint;
use crate::secret::Secret;
use crate::tls::ClientTls;

#[derive(Debug, Clone, Default)]
pub struct Route {
    /// `None` when no URL of the configuration is https.
    pub tls: Option<Arc<ClientTls>>,
    /// The proxy as attohttpc takes it: its URL may hold the proxy's credentials.
    proxy: Option<Secret<ProxySettings>>,
    /// `Proxy-Authorization` for plain-http requests through the proxy. An https request
    /// carries the credentials in its `CONNECT` (attohttpc), never inside the tunnel,
    /// where the endpoint would read them.
    proxy_auth: Option<Secret<String>>,
}

impl Route {
    pub fn new(tls: Option<Arc<ClientTls>>, proxy: Option<&Endpoint>) -> Route {
        let settings = proxy.and_then(|p| {
            // Validated by the config: an http URL with nothing after the port.
            let url = url::Url::parse(p.url.expose()).ok()?;
            Some(Secret::new(
                ProxySettings::builder()
                    .http_proxy(url.clone())
                    .https_proxy(url)
                    .build(),
            ))
        });
        Route {
            tls,
            proxy: settings,
            proxy_auth: proxy.and_then(Endpoint::basic_auth),
        }
    }

    /// Puts the route on a request to an `https` (or plain http) URL.
    pub fn apply(&self, mut b: RequestBuilder, https: bool) -> RequestBuilder {
        b = b.proxy_settings(match &self.proxy {
            Some(p) => p.expose().clone(),
            // Not ProxySettings::from_env(): inherited variables never reroute uploads.
            None => ProxySettings::builder().build(),
        });
        if let Some(tls) = &self.tls {
            b = b.tls_config(tls.rustls());
        }
        if let (false, Some(auth)) = (https, &self.proxy_auth) {
            b = b.header(PROXY_AUTHORIZATION, auth.expose().as_str());
        }
        b
    }

    /// Whether `url` is an https URL (any case, as the config accepts it).
    pub fn is_https(url: &str) -> bool {
        url.get(..8)
            .is_some_and(|s| s.eq_ignore_ascii_case("https://"))
    }
}
