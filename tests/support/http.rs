//! A small real HTTP/1.1 server on 127.0.0.1 for the notification and proxy
//! tests: it records every request (method, path, headers, body) and answers
//! as told: 200, an error status, never (it holds the connection), or as a
//! script writes it (a model API streaming server-sent events).

#![allow(dead_code, reason = "each test uses a different subset")]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    /// Names in lower case.
    pub headers: BTreeMap<String, String>,
    pub body: String,
    /// When it arrived, from the server's start.
    pub at: Duration,
}

impl Request {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body of {} is not JSON ({e}): {}", self.path, self.body))
    }
}

#[derive(Debug, Clone, Copy)]
pub enum Answer {
    Status(u16),
    /// Read the request, never answer (the connection is held for a minute).
    Hang,
}

/// A scripted answer: it writes the whole HTTP response itself (status
/// line, headers, body, as slowly as it likes); the connection closes after it.
pub type Script = Arc<dyn Fn(&Request, &mut TcpStream) + Send + Sync>;

#[derive(Clone)]
enum Reply {
    Answer(Answer),
    Script(Script),
}

pub struct Server {
    pub port: u16,
    requests: Arc<Mutex<Vec<Request>>>,
}

impl Server {
    pub fn start(answer: Answer) -> Server {
        Self::start_with(Reply::Answer(answer))
    }

    /// A server whose every answer `script` writes.
    pub fn scripted(script: Script) -> Server {
        Self::start_with(Reply::Script(script))
    }

    fn start_with(reply: Reply) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        let port = listener.local_addr().unwrap().port();
        let requests: Arc<Mutex<Vec<Request>>> = Arc::default();
        let seen = requests.clone();
        let started = Instant::now();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let seen = seen.clone();
                let reply = reply.clone();
                std::thread::spawn(move || serve(stream, reply, seen, started));
            }
        });
        Server { port, requests }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }

    pub fn requests_to(&self, path: &str) -> Vec<Request> {
        self.requests()
            .into_iter()
            .filter(|r| r.path == path)
            .collect()
    }
}

/// Requests on one connection (keep-alive), until the client closes it.
fn serve(stream: TcpStream, reply: Reply, seen: Arc<Mutex<Vec<Request>>>, started: Instant) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(60)));
    let mut out = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or_default().to_string();
        let path = parts.next().unwrap_or_default().to_string();
        let mut headers = BTreeMap::new();
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
            }
        }
        let len: usize = headers
            .get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; len];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let request = Request {
            method,
            path,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
            at: started.elapsed(),
        };
        seen.lock().unwrap().push(request.clone());
        let answer = match &reply {
            Reply::Answer(a) => *a,
            Reply::Script(script) => {
                script(&request, &mut out);
                return;
            }
        };
        match answer {
            Answer::Hang => {
                std::thread::sleep(Duration::from_secs(60));
                return;
            }
            Answer::Status(code) => {
                let body = if code == 200 {
                    ""
                } else {
                    "{\"error\":\"nope\"}"
                };
                let reply = format!(
                    "HTTP/1.1 {code} X\r\ncontent-length: {}\r\ncontent-type: application/json\r\n\r\n{body}",
                    body.len()
                );
                if out.write_all(reply.as_bytes()).is_err() {
                    return;
                }
            }
        }
    }
}
