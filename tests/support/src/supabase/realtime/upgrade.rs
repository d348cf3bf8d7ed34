//! The WebSocket upgrade (§1.3, §2.1, §2.2): the refusal fault, `vsn` negotiation, the key
//! checks with Realtime's error texts, the 101 handshake, and the socket's own thread.

use std::io::Write;
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use serde_json::json;
use tungstenite::protocol::{Role, WebSocketConfig};
use tungstenite::WebSocket;

use super::super::{jwt_claims, jwt_role, looks_like_jwt, JwtProblem, Shared};
use super::frame::Vsn;
use super::socket::{Socket, READ_TICK};
use super::Conn;
use crate::http::{Reply, Request, Response};

fn error_json(status: u16, text: &str) -> Reply {
    Reply::Respond(Response::json(status, &json!({"error": text})))
}

/// Handle `GET /realtime/v1/websocket`: checks, handshake, then hand the socket to its thread.
pub(crate) fn handle_upgrade(shared: &Arc<Shared>, req: Request, stream: &TcpStream) -> Reply {
    let rt = &shared.rt;
    if shared.stopping.load(Ordering::SeqCst) {
        return Reply::Hangup;
    }
    if let Some((status, text)) = rt.refuse.lock().unwrap().clone() {
        return error_json(status, &text);
    }
    let query = req.query_pairs();
    let param = |name: &str| {
        query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    // Phoenix negotiates the serializer before the socket's connect callback runs.
    let vsn = match param("vsn").as_deref() {
        None | Some("1.0.0") => Vsn::V1,
        Some("2.0.0") => Vsn::V2,
        Some(_) => return Reply::Respond(Response::new(403)),
    };
    let is_upgrade = req.method == "GET"
        && req
            .header("upgrade")
            .is_some_and(|u| u.eq_ignore_ascii_case("websocket"));
    let Some(key) = req.header("sec-websocket-key").filter(|_| is_upgrade) else {
        return Reply::Respond(Response::new(400).body("Bad Request: not a WebSocket upgrade"));
    };
    if req.header("sec-websocket-version") != Some("13") {
        return Reply::Respond(
            Response::new(426)
                .header("Sec-WebSocket-Version", "13")
                .body("Upgrade Required"),
        );
    }
    // Realtime reads the x-api-key header first, then the apikey param (§1.3).
    let Some(token) = req
        .header("x-api-key")
        .map(str::to_string)
        .or_else(|| param("apikey"))
    else {
        return error_json(401, "API key is missing");
    };
    let service = &shared.config.service_key;
    if token != *service {
        if token.starts_with("sb_") {
            // A wrong new-style key is stopped by the gateway, in its own shape.
            return Reply::Respond(Response::json(
                401,
                &json!({"message": "Invalid API key", "hint": "Double check your Supabase `anon` or `service_role` API key."}),
            ));
        }
        return if looks_like_jwt(&token) {
            error_json(401, "Failed to validate JWT signature")
        } else {
            error_json(401, "The token provided is not a valid JWT")
        };
    }
    if !service.starts_with("sb_") {
        match jwt_claims(&token) {
            Ok(_) => {}
            Err(JwtProblem::NotJwt { .. }) => {
                return error_json(401, "The token provided is not a valid JWT")
            }
            Err(JwtProblem::MissingClaims) => {
                return error_json(401, "Fields `role` and `exp` are required in JWT")
            }
            Err(JwtProblem::Expired(_)) => return error_json(401, "Token has expired"),
        }
    }

    // The gateway turns an `sb_secret_` key into a service_role JWT (§1.3, inferred).
    let role = if token.starts_with("sb_secret_") {
        Some("service_role".to_string())
    } else if token.starts_with("sb_") {
        Some("anon".to_string())
    } else {
        jwt_role(&token)
    };

    let (Ok(mut write_half), Ok(sock), Ok(cut)) =
        (stream.try_clone(), stream.try_clone(), stream.try_clone())
    else {
        return Reply::Hangup;
    };
    let _ = sock.set_read_timeout(Some(READ_TICK));
    // A client that stops reading must not wedge the socket's thread forever.
    let _ = sock.set_write_timeout(Some(Duration::from_secs(5)));
    let _ = sock.set_nodelay(true);
    let (tx, rx) = mpsc::channel();
    let id = rt.next_conn.fetch_add(1, Ordering::SeqCst);
    let conn = Arc::new(Conn {
        id,
        vanished: AtomicBool::new(false),
        vsn,
        tx,
        stream: cut,
        channels: Mutex::default(),
        role,
    });
    // Registered and counted before the 101 goes out, so an observer that saw the upgrade
    // succeed also sees it in the counters.
    rt.conns.lock().unwrap().insert(id, conn.clone());
    rt.connections.fetch_add(1, Ordering::SeqCst);
    let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
    let head = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {accept}\r\n\r\n"
    );
    if write_half
        .write_all(head.as_bytes())
        .and_then(|_| write_half.flush())
        .is_err()
    {
        rt.conns.lock().unwrap().remove(&id);
        return Reply::Hangup;
    }
    // Cowboy's inbound frame limit is 5,000,000 bytes (§2.1).
    let config = WebSocketConfig {
        max_message_size: Some(5_000_000),
        max_frame_size: Some(5_000_000),
        ..WebSocketConfig::default()
    };
    let ws = WebSocket::from_raw_socket(sock, Role::Server, Some(config));
    let shared = shared.clone();
    let spawned = thread::Builder::new()
        .name(format!("realtime-socket-{id}"))
        .spawn(move || {
            let mut s = Socket {
                shared: shared.clone(),
                conn: conn.clone(),
                ws,
                rx,
                timers: Vec::new(),
            };
            s.run();
            shared.rt.conns.lock().unwrap().remove(&id);
            let _ = conn.stream.shutdown(Shutdown::Both);
            // Closed, timed out or cut: its channels end and their presence members leave.
            shared.rt.conn_gone(&conn);
        });
    if spawned.is_err() {
        rt.conns.lock().unwrap().remove(&id);
        return Reply::Hangup;
    }
    Reply::TakenOver
}
