//! The router, built from banger-api's endpoint declarations: each
//! [`Endpoint`] is routed at its declared method and path to one handler.
//! Its input (path parameters, query, JSON body) is decoded here, once for
//! all routes, into a [`Call`], and the handler must answer the declared
//! response type. [`Routes::finish`] refuses to build a router that leaves
//! a declared endpoint unrouted or routes one twice.

use std::future::Future;

use axum::Router;
use axum::body::Body;
use axum::extract::{FromRequestParts, RawPathParams, Request, State as AxState};
use axum::http::HeaderMap;
use axum::routing::{MethodFilter, on};
use banger_api::endpoint::{Input, Method, Output};
use banger_api::{ApiError, Endpoint, endpoints};

use crate::reply::{Events, Failure, Reply, long_op, ok, parse, wants_stream};
use crate::state::State;

/// Largest JSON body a route reads.
const JSON_LIMIT: usize = 2 << 20;

/// A decoded request of endpoint `E`.
pub(crate) struct Call<E: Endpoint> {
    /// The path parameters, in the declared order.
    pub params: Vec<String>,
    pub query: E::Query,
    pub body: E::Request,
    pub headers: HeaderMap,
}

impl<E: Endpoint> Call<E> {
    /// The first path parameter: the `{reference}` of most routes.
    pub fn reference(&self) -> String {
        self.params.first().cloned().unwrap_or_default()
    }
}

fn filter(method: Method) -> MethodFilter {
    match method {
        Method::Get => MethodFilter::GET,
        Method::Post => MethodFilter::POST,
        Method::Put => MethodFilter::PUT,
        Method::Patch => MethodFilter::PATCH,
        Method::Delete => MethodFilter::DELETE,
    }
}

/// Decodes `req` as a call of `E`; the body is read only when `E` takes
/// JSON, else it is handed back untouched.
async fn decode<E: Endpoint>(
    parts: &mut axum::http::request::Parts,
    body: Body,
) -> Result<(Call<E>, Body), Failure> {
    let raw = RawPathParams::from_request_parts(parts, &())
        .await
        .map_err(|e| {
            Failure(ApiError::invalid(format!(
                "invalid path: {}",
                e.body_text()
            )))
        })?;
    let params = E::PARAMS
        .iter()
        .map(|p| {
            raw.iter()
                .find(|(k, _)| *k == p.name)
                .map(|(_, v)| v.to_string())
                .unwrap_or_default()
        })
        .collect();
    let query: E::Query = serde_urlencoded::from_str(parts.uri.query().unwrap_or(""))
        .map_err(|e| Failure(ApiError::invalid(format!("invalid query: {e}"))))?;
    let (body, rest) = match E::INPUT {
        Input::Json { .. } => {
            let bytes = axum::body::to_bytes(body, JSON_LIMIT)
                .await
                .map_err(|e| Failure(ApiError::invalid(format!("invalid request body: {e}"))))?;
            (parse(&bytes)?, Body::empty())
        }
        Input::None | Input::Tar => (
            serde_json::from_value(serde_json::Value::Null).map_err(|e| {
                Failure(ApiError::internal(format!(
                    "{} declares no body but its request type needs one: {e}",
                    E::ID
                )))
            })?,
            body,
        ),
    };
    let call = Call {
        params,
        query,
        body,
        headers: parts.headers.clone(),
    };
    Ok((call, rest))
}

/// The routes routed so far.
pub(crate) struct Routes {
    router: Router<State>,
    routed: Vec<&'static str>,
}

impl Routes {
    pub fn new() -> Self {
        Routes {
            router: Router::new(),
            routed: Vec::new(),
        }
    }

    fn add<E: Endpoint>(
        mut self,
        expected: &[Output],
        route: axum::routing::MethodRouter<State>,
    ) -> Self {
        assert!(
            expected
                .iter()
                .any(|o| std::mem::discriminant(o) == std::mem::discriminant(&E::OUTPUT)),
            "{} answers {:?}, which this kind of handler does not",
            E::ID,
            E::OUTPUT
        );
        self.routed.push(E::ID);
        self.router = self.router.route(E::PATH, route);
        self
    }

    /// A route that answers JSON.
    pub fn json<E, F, Fut>(self, f: F) -> Self
    where
        E: Endpoint,
        F: Fn(State, Call<E>) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Result<E::Response, Failure>> + Send + 'static,
    {
        let route = on(
            filter(E::METHOD),
            move |AxState(state): AxState<State>, req: Request| {
                let f = f.clone();
                async move {
                    let (mut parts, body) = req.into_parts();
                    let (call, _) = decode::<E>(&mut parts, body).await?;
                    ok(&f(state, call).await?)
                }
            },
        );
        self.add::<E>(&[Output::Json], route)
    }

    /// A long operation: one JSON answer, or its events as NDJSON when the
    /// client asks for them. The operation runs to its end even when the
    /// client goes away.
    pub fn events<E, F, Fut>(self, f: F) -> Self
    where
        E: Endpoint,
        F: Fn(State, Call<E>, Events) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Result<E::Response, Failure>> + Send + 'static,
    {
        let route = on(
            filter(E::METHOD),
            move |AxState(state): AxState<State>, req: Request| {
                let f = f.clone();
                async move {
                    let (mut parts, body) = req.into_parts();
                    let (call, _) = decode::<E>(&mut parts, body).await?;
                    let stream = wants_stream(&call.headers);
                    long_op(stream, move |events| f(state, call, events)).await
                }
            },
        );
        self.add::<E>(&[Output::Events], route)
    }

    /// A route whose body or answer is a stream (a tar, the console, an
    /// upgraded connection, an upload imported as a long operation): the
    /// handler gets the request itself.
    pub fn raw<E, F, Fut>(self, f: F) -> Self
    where
        E: Endpoint,
        F: Fn(State, Call<E>, Request) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Reply> + Send + 'static,
    {
        let route = on(
            filter(E::METHOD),
            move |AxState(state): AxState<State>, req: Request| {
                let f = f.clone();
                async move {
                    let (mut parts, body) = req.into_parts();
                    let (call, body) = decode::<E>(&mut parts, body).await?;
                    f(state, call, Request::from_parts(parts, body)).await
                }
            },
        );
        self.add::<E>(
            &[
                Output::Json,
                Output::Events,
                Output::Text,
                Output::Tar,
                Output::Upgrade(""),
            ],
            route,
        )
    }

    /// What keeps these routes from matching the declarations: endpoints
    /// declared and not routed, routed twice, or routed and not declared.
    pub fn problems(&self) -> Vec<String> {
        let mut out: Vec<String> = endpoints::ALL
            .iter()
            .filter(|e| !self.routed.contains(&e.id))
            .map(|e| format!("declared but not routed: {}", e.id))
            .collect();
        let mut seen = std::collections::HashSet::new();
        for id in &self.routed {
            if !seen.insert(id) {
                out.push(format!("routed twice: {id}"));
            }
            if !endpoints::ALL.iter().any(|e| e.id == *id) {
                out.push(format!("routed but not declared: {id}"));
            }
        }
        out
    }

    /// The router, once every declared endpoint has its one handler.
    pub fn finish(self, state: State) -> Router {
        let problems = self.problems();
        assert!(
            problems.is_empty(),
            "the routes do not match the declarations: {problems:?}"
        );
        self.router.fallback(not_found).with_state(state)
    }
}

async fn not_found() -> Failure {
    Failure(ApiError::not_found("no such route; see docs/api.md"))
}
