//! Responses the gateway writes itself: plugin answers and the JSON errors of CONFIG.md.

use crate::chain::Chain;
use gatehouse_plugins::{PluginResponse, RequestContext};
use http::header::{CONTENT_LENGTH, WWW_AUTHENTICATE};
use pingora_error::Result;
use pingora_http::ResponseHeader;
use pingora_proxy::Session;

/// Writes `resp` to the client after the chain's `response_filter` hooks saw it.
pub async fn send(
    session: &mut Session,
    chain: &Chain,
    ctx: &mut RequestContext,
    resp: PluginResponse,
) -> Result<()> {
    let mut header = ResponseHeader::build(resp.status, Some(resp.headers.len() + 2))?;
    for (n, v) in resp.headers {
        header.append_header(n, v)?;
    }
    // RFC 9110 §8.6: no Content-Length on 1xx and 204; a 304 describes a body it does not carry.
    let bodiless = resp.status < 200 || resp.status == 204 || resp.status == 304;
    if !bodiless {
        header.insert_header(CONTENT_LENGTH, resp.body.len())?;
    }
    for p in chain.response.iter() {
        p.response_filter(&mut header, ctx).await?;
    }
    let head_only = session.req_header().method == http::Method::HEAD;
    let has_body = !resp.body.is_empty() && !head_only && !bodiless;
    session
        .write_response_header(Box::new(header), !has_body)
        .await?;
    if has_body {
        session.write_response_body(Some(resp.body), true).await?;
    }
    Ok(())
}

/// The gateway's standard JSON error, with the headers CONFIG.md asks for.
pub fn error(status: u16, message: &str) -> PluginResponse {
    let r = PluginResponse::error(status, message);
    if status == 401 {
        r.with_header(WWW_AUTHENTICATE, http::HeaderValue::from_static("Bearer"))
    } else {
        r
    }
}
