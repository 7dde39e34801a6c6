//! The policy file (`--config FILE`, TOML): which paths the layer covers and
//! with which options. Every option of the layer can be set in `[defaults]`
//! and changed per `[[route]]`; a route's unset options are the defaults'.
//!
//! ```toml
//! [defaults]
//! tenant = { header = "x-api-key" }   # or tenant = "single"
//! store = "non-server-errors"
//!
//! [[route]]
//! path = "/v1/payments/**"
//! key_required = true
//! fingerprint = { json = true }
//!
//! [[route]]
//! path = "/v1/webhooks/**"
//! profile = "standard-webhooks"
//!
//! [[route]]
//! path = "/v1/search"
//! skip = true          # forwarded untouched
//! ```
//!
//! The first route whose `path` matches a request's path decides; a path no
//! route matches is forwarded untouched. A route that names a `profile` of
//! its own starts from it and takes only the `tenant` from `[defaults]`;
//! `fingerprint` merges part by part; `in_flight` and `in_flight_wait` go
//! together. Without any `[[route]]` (or
//! without a file), the defaults cover every path (`/**`). Unknown names
//! are refused, so a misspelt option never silently falls back to a
//! default.

use http::{HeaderName, Method, StatusCode};
use idemstore_http::{
    IdempotencyConfig, InFlightPolicy, JsonBody, OversizeResponse, ReplayStatus, ResponseHeaders,
    RoutePattern, RoutePolicy, StorePolicy, TenantSource,
};
use serde::Deserialize;
use std::time::Duration;

/// The file as written.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    defaults: Options,
    #[serde(default)]
    route: Vec<Options>,
}

/// A request's tenant, as the file names it.
#[derive(Deserialize, Debug, Clone)]
#[serde(untagged)]
enum Tenant {
    /// `"single"`.
    Named(String),
    /// `{ header = "x-api-key" }`.
    Header {
        /// The header whose value names the tenant.
        header: String,
    },
}

/// `"original"` or a status code.
#[derive(Deserialize, Debug, Clone)]
#[serde(untagged)]
enum Replay {
    Named(String),
    Status(u16),
}

/// What the fingerprint covers; unset parts keep the layer's default.
#[derive(Deserialize, Debug, Clone, Default)]
#[serde(deny_unknown_fields)]
struct Fingerprint {
    method: Option<bool>,
    path_and_query: Option<bool>,
    body: Option<bool>,
    headers: Option<Vec<String>>,
    json: Option<bool>,
    json_members: Option<Vec<String>>,
}

/// Which response headers are stored.
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
struct StoredHeaders {
    only: Option<Vec<String>>,
    all_except: Option<Vec<String>>,
}

/// Every option, each unset unless written. Field names are the layer's
/// option names (`IdempotencyConfig`).
#[derive(Deserialize, Debug, Clone, Default)]
#[serde(deny_unknown_fields)]
struct Options {
    /// Routes only: the path pattern.
    path: Option<String>,
    /// Routes only: forward the route's requests untouched.
    skip: Option<bool>,
    tenant: Option<Tenant>,
    profile: Option<String>,
    repeatability_window: Option<String>,
    header: Option<String>,
    methods: Option<Vec<String>>,
    key_required: Option<bool>,
    key_len: Option<[usize; 2]>,
    store: Option<String>,
    replay_status: Option<Replay>,
    in_flight: Option<String>,
    in_flight_wait: Option<String>,
    fingerprint: Option<Fingerprint>,
    max_request_bytes: Option<usize>,
    max_response_bytes: Option<usize>,
    oversize: Option<String>,
    renew_every: Option<String>,
    capture_timeout: Option<String>,
    replayed_header: Option<String>,
    max_in_flight: Option<usize>,
    expiry_header: Option<String>,
    stored_headers: Option<StoredHeaders>,
    retention: Option<String>,
}

/// One route of the proxy: the requests it covers and the layer's
/// configuration for them (`None`: forwarded untouched).
#[derive(Debug)]
pub(crate) struct Route {
    /// Its pattern, as written.
    pub(crate) path: String,
    /// Its pattern.
    pub(crate) pattern: RoutePattern,
    /// The layer's configuration (its `paths` not yet restricted to the
    /// route), or `None` for a skipped route.
    pub(crate) config: Option<IdempotencyConfig>,
}

/// The tenant the command line names (`--tenant-header`,
/// `--single-tenant`), for a file that names none in `[defaults]`.
#[derive(Debug, Clone)]
pub(crate) enum TenantFlag {
    /// This header's value.
    Header(String),
    /// One tenant.
    Single,
}

/// The routes of the file's text, in order (see the module docs), with
/// `tenant` as the defaults' tenant when the file's `[defaults]` names none.
///
/// # Errors
///
/// What is wrong, naming the route and the option.
pub(crate) fn parse(text: &str, tenant: Option<TenantFlag>) -> Result<Vec<Route>, String> {
    let mut file: File = toml::from_str(text).map_err(|e| e.to_string())?;
    if file.defaults.tenant.is_none() {
        file.defaults.tenant = tenant.map(|t| match t {
            TenantFlag::Header(header) => Tenant::Header { header },
            TenantFlag::Single => Tenant::Named("single".into()),
        });
    }
    if file.defaults.path.is_some() || file.defaults.skip.is_some() {
        return Err("[defaults] takes no path or skip: those are a [[route]]'s".into());
    }
    let routes = if file.route.is_empty() {
        vec![Options {
            path: Some("/**".into()),
            ..Options::default()
        }]
    } else {
        file.route
    };
    routes
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            let Some(path) = r.path.clone() else {
                return Err(format!("[[route]] number {} has no path", i + 1));
            };
            let pattern = RoutePattern::parse(&path).map_err(|e| format!("route {path}: {e}"))?;
            let config = if r.skip == Some(true) {
                None
            } else {
                let merged = r.over(&file.defaults);
                Some(merged.config().map_err(|e| format!("route {path}: {e}"))?)
            };
            Ok(Route {
                path,
                pattern,
                config,
            })
        })
        .collect()
}

/// A duration option: humantime's syntax (`500ms`, `30s`, `1h`).
fn duration(name: &str, s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{name} = {s:?}: {e} (write e.g. 30s or 1h)"))
}

fn header_name(name: &str, s: &str) -> Result<HeaderName, String> {
    HeaderName::from_bytes(s.to_ascii_lowercase().as_bytes())
        .map_err(|_| format!("{name} = {s:?} is not a header name"))
}

fn header_names(name: &str, v: &[String]) -> Result<Vec<HeaderName>, String> {
    v.iter().map(|s| header_name(name, s)).collect()
}

impl Options {
    /// These options, with the unset ones taken from `defaults`. A route
    /// that names a profile of its own starts from that profile and takes
    /// only the tenant from `defaults` (the defaults' options were written
    /// for the defaults' profile). The fingerprint merges part by part; the
    /// in-flight policy and its wait go together.
    fn over(self, d: &Options) -> Options {
        if self.profile.is_some() && self.profile != d.profile {
            return Options {
                tenant: self.tenant.or_else(|| d.tenant.clone()),
                ..self
            };
        }
        let fingerprint = match (&self.fingerprint, &d.fingerprint) {
            (Some(f), Some(g)) => Some(Fingerprint {
                method: f.method.or(g.method),
                path_and_query: f.path_and_query.or(g.path_and_query),
                body: f.body.or(g.body),
                headers: f.headers.clone().or_else(|| g.headers.clone()),
                json: f.json.or(g.json),
                json_members: f.json_members.clone().or_else(|| g.json_members.clone()),
            }),
            (f, g) => f.clone().or_else(|| g.clone()),
        };
        let (in_flight, in_flight_wait) =
            if self.in_flight.is_some() || self.in_flight_wait.is_some() {
                (self.in_flight.clone(), self.in_flight_wait.clone())
            } else {
                (d.in_flight.clone(), d.in_flight_wait.clone())
            };
        let merged = self.merged(d);
        Options {
            fingerprint,
            in_flight,
            in_flight_wait,
            ..merged
        }
    }

    /// Every option of `self`, else of `d`.
    fn merged(self, d: &Options) -> Options {
        macro_rules! or {
            ($($f:ident),*) => { Options { $($f: self.$f.or_else(|| d.$f.clone()),)* } };
        }
        or!(
            path,
            skip,
            tenant,
            profile,
            repeatability_window,
            header,
            methods,
            key_required,
            key_len,
            store,
            replay_status,
            in_flight,
            in_flight_wait,
            fingerprint,
            max_request_bytes,
            max_response_bytes,
            oversize,
            renew_every,
            capture_timeout,
            replayed_header,
            max_in_flight,
            expiry_header,
            stored_headers,
            retention
        )
    }

    /// The layer's configuration these options give.
    fn config(&self) -> Result<IdempotencyConfig, String> {
        let tenant = match &self.tenant {
            None => {
                return Err(
                    "no tenant: say whose keys these are, with tenant = { header = \
                     \"x-api-key\" } (the header your gateway sets to the caller's account) \
                     or tenant = \"single\" (one caller only)"
                        .into(),
                );
            }
            Some(Tenant::Named(s)) if s == "single" => TenantSource::Single,
            Some(Tenant::Named(s)) => {
                return Err(format!(
                    "tenant = {s:?}: write tenant = \"single\" or tenant = {{ header = \"...\" }}"
                ));
            }
            Some(Tenant::Header { header }) => {
                TenantSource::Header(header_name("tenant.header", header)?)
            }
        };
        let mut c = match self.profile.as_deref() {
            None => IdempotencyConfig::new(tenant),
            Some("standard-webhooks") => IdempotencyConfig::standard_webhooks(tenant),
            Some("oasis-repeatable-requests") => {
                let Some(w) = &self.repeatability_window else {
                    return Err(
                        "profile \"oasis-repeatable-requests\" needs repeatability_window, \
                         e.g. \"5m\""
                            .into(),
                    );
                };
                IdempotencyConfig::oasis_repeatable_requests(
                    tenant,
                    duration("repeatability_window", w)?,
                )
            }
            Some(p) => {
                return Err(format!(
                    "profile = {p:?}: the profiles are \"standard-webhooks\" and \
                     \"oasis-repeatable-requests\""
                ));
            }
        };
        if self.repeatability_window.is_some()
            && self.profile.as_deref() != Some("oasis-repeatable-requests")
        {
            return Err(
                "repeatability_window goes with profile = \"oasis-repeatable-requests\"".into(),
            );
        }
        if let Some(h) = &self.header {
            c = c.header(header_name("header", h)?);
        }
        if let Some(ms) = &self.methods {
            let methods = ms
                .iter()
                .map(|m| {
                    Method::from_bytes(m.to_ascii_uppercase().as_bytes())
                        .map_err(|_| format!("methods: {m:?} is not a method"))
                })
                .collect::<Result<Vec<_>, _>>()?;
            c = c.methods(methods);
        }
        if let Some(k) = self.key_required {
            c = c.key_required(k);
        }
        if let Some([lo, hi]) = self.key_len {
            c = c.key_len(lo..=hi);
        }
        if let Some(s) = &self.store {
            c = c.store(match s.as_str() {
                "all" => StorePolicy::All,
                "non-server-errors" => StorePolicy::NonServerErrors,
                "success-only" => StorePolicy::SuccessOnly,
                _ => {
                    return Err(format!(
                        "store = {s:?}: write \"all\", \"non-server-errors\" or \"success-only\""
                    ));
                }
            });
        }
        if let Some(r) = &self.replay_status {
            c = c.replay_status(match r {
                Replay::Named(s) if s == "original" => ReplayStatus::Original,
                Replay::Status(n) => ReplayStatus::Fixed(
                    StatusCode::from_u16(*n)
                        .map_err(|_| format!("replay_status = {n} is not a status"))?,
                ),
                Replay::Named(s) => {
                    return Err(format!(
                        "replay_status = {s:?}: write \"original\" or a status such as 409"
                    ));
                }
            });
        }
        c = c.in_flight(
            match (self.in_flight.as_deref(), self.in_flight_wait.as_deref()) {
                (None | Some("conflict"), None) => InFlightPolicy::Conflict,
                (None | Some("wait"), Some(w)) => {
                    InFlightPolicy::Wait(duration("in_flight_wait", w)?)
                }
                (Some("wait"), None) => {
                    return Err("in_flight = \"wait\" needs in_flight_wait, e.g. \"5s\"".into());
                }
                (Some(p), _) => {
                    return Err(format!(
                        "in_flight = {p:?}: write \"conflict\" (409 while the first runs) or \
                         \"wait\" with in_flight_wait"
                    ));
                }
            },
        );
        if let Some(f) = &self.fingerprint {
            let mut spec = c.fingerprint.clone();
            spec.method = f.method.unwrap_or(spec.method);
            spec.path_and_query = f.path_and_query.unwrap_or(spec.path_and_query);
            spec.body = f.body.unwrap_or(spec.body);
            if let Some(h) = &f.headers {
                spec.headers = header_names("fingerprint.headers", h)?;
            }
            match (f.json, &f.json_members) {
                (Some(false), Some(_)) => {
                    return Err("fingerprint.json_members needs fingerprint.json = true".into());
                }
                (Some(false), None) => spec.json = None,
                (Some(true), m) | (None, m @ Some(_)) => {
                    spec.json = Some(JsonBody {
                        members: m.clone().unwrap_or_default(),
                    });
                }
                (None, None) => {}
            }
            c = c.fingerprint(spec);
        }
        if let Some(n) = self.max_request_bytes {
            c = c.max_request_bytes(n);
        }
        if let Some(n) = self.max_response_bytes {
            c = c.max_response_bytes(n);
        }
        if let Some(o) = &self.oversize {
            c = c.oversize(match o.as_str() {
                "store-notice" => OversizeResponse::StoreNotice,
                "release" => OversizeResponse::Release,
                _ => {
                    return Err(format!(
                        "oversize = {o:?}: write \"store-notice\" or \"release\""
                    ));
                }
            });
        }
        if let Some(d) = &self.renew_every {
            c = c.renew_every(duration("renew_every", d)?);
        }
        if let Some(d) = &self.capture_timeout {
            c = c.capture_timeout(duration("capture_timeout", d)?);
        }
        if let Some(h) = &self.replayed_header {
            c = c.replayed_header(header_name("replayed_header", h)?);
        }
        if let Some(n) = self.max_in_flight {
            c = c.max_in_flight(n);
        }
        if let Some(h) = &self.expiry_header {
            c = c.expiry_header(header_name("expiry_header", h)?);
        }
        if let Some(s) = &self.stored_headers {
            c = c.response_headers(match (&s.only, &s.all_except) {
                (Some(only), None) => {
                    ResponseHeaders::only(header_names("stored_headers.only", only)?)
                }
                (None, Some(except)) => {
                    ResponseHeaders::all_except(header_names("stored_headers.all_except", except)?)
                }
                _ => {
                    return Err(
                        "stored_headers takes one of only = [...] or all_except = [...]".into(),
                    );
                }
            });
        }
        if let Some(r) = &self.retention {
            c = c.route(
                "/**",
                RoutePolicy::default().retention(duration("retention", r)?),
            );
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_route_takes_the_defaults_it_does_not_change() {
        let routes = parse(
            r#"
            [defaults]
            tenant = { header = "X-Api-Key" }
            store = "success-only"
            max_response_bytes = 4096

            [[route]]
            path = "/v1/payments/**"
            key_required = true
            fingerprint = { json = true, json_members = ["/amount"] }

            [[route]]
            path = "/v1/search"
            skip = true

            [[route]]
            path = "/v1/hooks"
            profile = "standard-webhooks"
            store = "all"
            "#,
            None,
        )
        .unwrap();
        assert_eq!(routes.len(), 3);
        let pay = routes[0].config.as_ref().unwrap();
        assert!(pay.key_required);
        assert_eq!(pay.store, StorePolicy::SuccessOnly);
        assert_eq!(pay.max_response_bytes, 4096);
        assert_eq!(
            pay.fingerprint.json.as_ref().unwrap().members,
            vec!["/amount".to_owned()]
        );
        assert!(matches!(&pay.tenant, TenantSource::Header(h) if h == "x-api-key"));
        assert!(routes[1].config.is_none());
        let hooks = routes[2].config.as_ref().unwrap();
        assert_eq!(hooks.header, "webhook-id");
        assert_eq!(hooks.store, StorePolicy::All, "the route's own word wins");
        assert!(routes[0].pattern.matches("/v1/payments/7"));
    }

    #[test]
    fn a_routes_own_profile_and_parts_of_tables_override_the_defaults() {
        let routes = parse(
            r#"
            [defaults]
            tenant = "single"
            store = "non-server-errors"
            in_flight = "wait"
            in_flight_wait = "5s"
            fingerprint = { headers = ["x-account"] }

            [[route]]
            path = "/hooks"
            profile = "standard-webhooks"

            [[route]]
            path = "/pay"
            in_flight = "conflict"
            fingerprint = { json = true }
            "#,
            None,
        )
        .unwrap();
        let hooks = routes[0].config.as_ref().unwrap();
        assert_eq!(
            hooks.store,
            StorePolicy::SuccessOnly,
            "the profile's, not the defaults'"
        );
        assert_eq!(hooks.in_flight, InFlightPolicy::Conflict);
        let pay = routes[1].config.as_ref().unwrap();
        assert_eq!(
            pay.in_flight,
            InFlightPolicy::Conflict,
            "the wait goes with the policy"
        );
        assert_eq!(
            pay.fingerprint.headers,
            vec![HeaderName::from_static("x-account")]
        );
        assert!(pay.fingerprint.json.is_some());
        assert_eq!(pay.store, StorePolicy::NonServerErrors);
    }

    #[test]
    fn without_routes_the_defaults_cover_every_path() {
        let routes = parse("", Some(TenantFlag::Single)).unwrap();
        assert_eq!(routes.len(), 1);
        assert!(routes[0].pattern.matches("/any/path"));
        assert!(routes[0].config.is_some());
    }

    #[test]
    fn mistakes_are_refused_naming_the_route_and_the_option() {
        for (text, says) in [
            ("[defaults]\nstore = \"all\"\n", "no tenant"),
            (
                "[defaults]\ntenant = \"single\"\nstroe = \"all\"\n",
                "stroe",
            ),
            (
                "[defaults]\ntenant = \"single\"\n[[route]]\npath = \"/a\"\nstore = \"some\"\n",
                "route /a: store = \"some\"",
            ),
            (
                "[defaults]\ntenant = \"single\"\n[[route]]\npath = \"/a\"\nrenew_every = \"soon\"\n",
                "renew_every",
            ),
            (
                "[defaults]\ntenant = \"single\"\n[[route]]\nskip = true\n",
                "has no path",
            ),
            (
                "[defaults]\ntenant = \"single\"\n[[route]]\npath = \"a\"\n",
                "must start with '/'",
            ),
            (
                "[defaults]\ntenant = \"single\"\nin_flight = \"wait\"\n",
                "in_flight_wait",
            ),
            (
                "[defaults]\ntenant = \"single\"\npath = \"/a\"\n",
                "no path or skip",
            ),
        ] {
            let e = parse(text, None).unwrap_err();
            assert!(e.contains(says), "{text}: {e}");
        }
    }
}
