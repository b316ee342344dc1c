//! The sidecar: a local HTTP application advertised as a murmur service. Each call of
//! method `M` is forwarded as `POST {url}/M` with the request as JSON; a 2xx answer's
//! JSON body is the reply, and other HTTP statuses become the matching status codes.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use murmur::rpc::ANY_METHOD;
use murmur::semver::Version;
use murmur::{Code, Context, ServiceDef, Status};
use reqwest::Url;
use serde_json::Value;

/// A `NAME=URL` pair from `--service`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SidecarSpec {
    pub name: String,
    pub url: Url,
}

impl FromStr for SidecarSpec {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (name, url) = text.split_once('=').ok_or_else(|| {
            format!(
                "invalid service {text:?}: expected NAME=URL, such as orders=http://127.0.0.1:8080"
            )
        })?;
        if name.is_empty()
            || !name.bytes().all(|byte| {
                byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-' | b'/')
            })
        {
            return Err(format!(
                "invalid service name {name:?} in {text:?}: expected ASCII letters, digits, '.', '_', '-' or '/'"
            ));
        }
        let url = Url::parse(url)
            .map_err(|error| format!("invalid URL {url:?} for service {name}: {error}"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!(
                "invalid URL {url} for service {name}: expected an http:// or https:// URL"
            ));
        }
        Ok(Self {
            name: name.to_string(),
            url,
        })
    }
}

impl fmt::Display for SidecarSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.name, self.url)
    }
}

/// The service that forwards every method to the application.
pub fn service(spec: &SidecarSpec, http: reqwest::Client) -> ServiceDef {
    let base = spec.url.clone();
    ServiceDef::new(spec.name.clone(), Version::new(0, 0, 0))
        .metadata("sidecar", spec.url.as_str())
        .unary(ANY_METHOD, move |ctx: Context, request: Value| {
            let http = http.clone();
            let base = base.clone();
            async move { forward(&http, &base, &ctx, request).await }
        })
}

async fn forward(
    http: &reqwest::Client,
    base: &Url,
    ctx: &Context,
    request: Value,
) -> Result<Value, Status> {
    let method = ctx.method();
    let mut url = base.clone();
    url.path_segments_mut()
        .map_err(|()| Status::internal(format!("sidecar URL {base} cannot take a path")))?
        .pop_if_empty()
        .push(method);
    let mut outgoing = http.post(url.clone()).json(&request);
    if let Some(remaining) = ctx.remaining() {
        outgoing = outgoing.timeout(remaining.max(Duration::from_millis(1)));
    }
    if let Some(traceparent) = ctx.traceparent() {
        outgoing = outgoing.header("traceparent", traceparent);
    }
    for (key, value) in ctx.metadata().iter() {
        let name =
            reqwest::header::HeaderName::from_bytes(format!("x-murmur-meta-{key}").as_bytes());
        let value = reqwest::header::HeaderValue::from_str(value);
        match (name, value) {
            (Ok(name), Ok(value)) => outgoing = outgoing.header(name, value),
            _ => tracing::debug!(
                key,
                "metadata entry is not a valid HTTP header; not forwarded"
            ),
        }
    }

    let answer = outgoing.send().await.map_err(|error| {
        tracing::debug!(%url, %error, "sidecar application did not answer");
        if error.is_timeout() {
            Status::deadline_exceeded(format!("application at {url} did not answer in time"))
        } else {
            Status::unavailable(format!("application at {url} cannot be reached: {error}"))
        }
    })?;
    let http_status = answer.status();
    let body = answer.bytes().await.map_err(|error| {
        Status::unavailable(format!("reading the answer from {url} failed: {error}"))
    })?;
    if http_status.is_success() {
        if body.is_empty() {
            return Ok(Value::Null);
        }
        return serde_json::from_slice(&body).map_err(|error| {
            Status::internal(format!(
                "application at {url} answered with invalid JSON: {error}"
            ))
        });
    }
    let message = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|value| {
            value
                .get("message")
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .unwrap_or_else(|| String::from_utf8_lossy(&body).trim().to_string());
    let message = if message.is_empty() {
        format!("application answered HTTP {http_status}")
    } else {
        message
    };
    Err(Status::new(code_for_http(http_status.as_u16()), message))
}

/// Maps an application's HTTP status to a call status code.
pub fn code_for_http(status: u16) -> Code {
    match status {
        400 => Code::InvalidArgument,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::NotFound,
        409 => Code::Aborted,
        429 => Code::ResourceExhausted,
        499 => Code::Cancelled,
        501 => Code::Unimplemented,
        503 => Code::Unavailable,
        504 => Code::DeadlineExceeded,
        other if (400..500).contains(&other) => Code::FailedPrecondition,
        _ => Code::Internal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_parses_name_and_url() {
        let spec: SidecarSpec = "orders=http://127.0.0.1:8080/api".parse().unwrap();
        assert_eq!(spec.name, "orders");
        assert_eq!(spec.url.as_str(), "http://127.0.0.1:8080/api");
    }

    #[test]
    fn spec_errors_name_the_value() {
        let error = "orders".parse::<SidecarSpec>().unwrap_err();
        assert!(error.contains("expected NAME=URL"), "{error}");
        let error = "orders=not a url".parse::<SidecarSpec>().unwrap_err();
        assert!(error.contains("\"not a url\""), "{error}");
        let error = "orders=ftp://host/".parse::<SidecarSpec>().unwrap_err();
        assert!(error.contains("http://"), "{error}");
        let error = "bad name=http://h/".parse::<SidecarSpec>().unwrap_err();
        assert!(error.contains("\"bad name\""), "{error}");
    }

    #[test]
    fn http_statuses_map_to_codes() {
        assert_eq!(code_for_http(404), Code::NotFound);
        assert_eq!(code_for_http(422), Code::FailedPrecondition);
        assert_eq!(code_for_http(500), Code::Internal);
        assert_eq!(code_for_http(504), Code::DeadlineExceeded);
    }
}
