//! A real SMTP listener on 127.0.0.1 that accepts everything and keeps the raw messages, so that
//! tests see exactly what a mail server would receive (and can follow the links in it).
//!
//! It speaks what lettre needs: EHLO/HELO, STARTTLS, AUTH PLAIN/LOGIN (recorded, always
//! accepted), MAIL FROM, RCPT TO, DATA (dot-unstuffed), RSET, NOOP, QUIT. [`SmtpSink::start`]
//! is plaintext (the mailer sends so only to loopback hosts with SMTP_SECURE=false);
//! [`SmtpSink::start_tls`] serves the throwaway certificate of ./scripts/test
//! (`TRUXE_TEST_TLS_CERT`, for 127.0.0.1) with STARTTLS, which it then requires before AUTH and
//! MAIL as a submission server does, or with implicit TLS.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_native_tls::{TlsAcceptor, native_tls};

/// One message as the server received it.
#[derive(Debug, Clone)]
pub struct RawMessage {
    /// The envelope sender (`MAIL FROM`), without angle brackets.
    pub mail_from: String,
    /// The envelope recipients (`RCPT TO`).
    pub rcpt_to: Vec<String>,
    /// `(user, password)` when the client authenticated.
    pub auth: Option<(String, String)>,
    /// Whether the session was encrypted when the message was sent.
    pub tls: bool,
    /// The DATA section, dot-unstuffed, CRLF line ends, without the final `.`.
    pub data: Vec<u8>,
}

/// How a [`SmtpSink::start_tls`] sink offers TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkTls {
    /// A plaintext greeting, then STARTTLS, required before AUTH and MAIL (a submission port).
    StartTls,
    /// TLS from the first byte (SMTPS).
    Implicit,
}

#[derive(Default)]
struct State {
    queue: Mutex<VecDeque<RawMessage>>,
    all: Mutex<Vec<RawMessage>>,
    notify: Notify,
    commands: Mutex<Vec<String>>,
    /// TLS handshakes that failed (the client refused the certificate), with the reason.
    handshake_failures: Mutex<Vec<String>>,
}

pub struct SmtpSink {
    port: u16,
    state: Arc<State>,
    task: JoinHandle<()>,
}

impl SmtpSink {
    pub async fn start() -> SmtpSink {
        Self::listen(None).await
    }

    /// A sink with TLS on the throwaway certificate ./scripts/test made for 127.0.0.1.
    pub async fn start_tls(mode: SinkTls) -> SmtpSink {
        let cert = std::fs::read(super::tls_cert_file()).expect("read TRUXE_TEST_TLS_CERT");
        let key = std::fs::read(super::tls_key_file()).expect("read TRUXE_TEST_TLS_KEY");
        let identity = native_tls::Identity::from_pkcs8(&cert, &key).expect("the test certificate and key");
        let acceptor = native_tls::TlsAcceptor::new(identity).expect("a TLS acceptor");
        Self::listen(Some((TlsAcceptor::from(acceptor), mode))).await
    }

    async fn listen(tls: Option<(TlsAcceptor, SinkTls)>) -> SmtpSink {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the SMTP sink");
        let port = listener.local_addr().expect("sink address").port();
        let state = Arc::new(State::default());
        let accept_state = Arc::clone(&state);
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let state = Arc::clone(&accept_state);
                let tls = tls.clone();
                tokio::spawn(async move {
                    // A client that hangs up mid-session is not the sink's problem.
                    let _ = serve(stream, state, tls).await;
                });
            }
        });
        SmtpSink { port, state, task }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The next message not yet returned by this method; panics after `timeout`.
    pub async fn wait_for_message(&self, timeout: Duration) -> RawMessage {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.state.notify.notified();
            tokio::pin!(notified);
            // Registered before looking, so a message stored in between still wakes us.
            notified.as_mut().enable();
            if let Some(message) = self.state.queue.lock().expect("queue").pop_front() {
                return message;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!("no message reached the SMTP sink within {timeout:?}; commands seen: {:?}", self.commands());
            }
        }
    }

    /// Every message received so far, in order.
    pub fn messages(&self) -> Vec<RawMessage> {
        self.state.all.lock().expect("messages").clone()
    }

    /// Every command line received so far (AUTH arguments redacted), for diagnostics.
    pub fn commands(&self) -> Vec<String> {
        self.state.commands.lock().expect("commands").clone()
    }

    /// Waits until a TLS handshake has failed (the client refused the certificate) and returns
    /// its reason; panics after `timeout`.
    pub async fn wait_for_handshake_failure(&self, timeout: Duration) -> String {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.state.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(reason) = self.state.handshake_failures.lock().expect("failures").first() {
                return reason.clone();
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!("no TLS handshake failed within {timeout:?}; commands seen: {:?}", self.commands());
            }
        }
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn read_line<S: AsyncRead + Unpin>(reader: &mut BufReader<S>) -> std::io::Result<Option<Vec<u8>>> {
    let mut line = Vec::new();
    if reader.read_until(b'\n', &mut line).await? == 0 {
        return Ok(None);
    }
    while line.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        line.pop();
    }
    Ok(Some(line))
}

/// `MAIL FROM:<a@b> BODY=8BITMIME` → `a@b`.
fn path_argument(line: &str) -> String {
    let after_colon = line.split_once(':').map_or("", |(_, rest)| rest).trim();
    match (after_colon.find('<'), after_colon.find('>')) {
        (Some(start), Some(end)) if start < end => after_colon[start + 1..end].to_string(),
        _ => after_colon.split_whitespace().next().unwrap_or("").to_string(),
    }
}

fn decode_b64_text(value: &str) -> String {
    let bytes = base64::engine::general_purpose::STANDARD.decode(value.trim()).unwrap_or_default();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// One connection: plaintext, TLS from the start, or plaintext upgraded by STARTTLS.
async fn serve(stream: TcpStream, state: Arc<State>, tls: Option<(TlsAcceptor, SinkTls)>) -> std::io::Result<()> {
    let handshake = |acceptor: TlsAcceptor, stream: TcpStream, state: Arc<State>| async move {
        match acceptor.accept(stream).await {
            Ok(stream) => Some(stream),
            Err(e) => {
                state.handshake_failures.lock().expect("failures").push(e.to_string());
                state.notify.notify_waiters();
                None
            }
        }
    };
    match tls {
        None => session(stream, &state, Phase::Plain, true).await.map(drop),
        Some((acceptor, SinkTls::Implicit)) => {
            let Some(stream) = handshake(acceptor, stream, Arc::clone(&state)).await else { return Ok(()) };
            session(stream, &state, Phase::Encrypted, true).await.map(drop)
        }
        Some((acceptor, SinkTls::StartTls)) => {
            // The read buffer is empty when STARTTLS returns: the client waits for our 220.
            let Some(plain) = session(stream, &state, Phase::OfferStartTls, true).await? else { return Ok(()) };
            let Some(stream) = handshake(acceptor, plain, Arc::clone(&state)).await else { return Ok(()) };
            session(stream, &state, Phase::Encrypted, false).await.map(drop)
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// No TLS on this sink.
    Plain,
    /// Before STARTTLS: only EHLO, HELO, STARTTLS, NOOP, RSET and QUIT.
    OfferStartTls,
    /// Inside TLS.
    Encrypted,
}

/// Speaks SMTP on `stream` until QUIT or hang-up (`None`), or until STARTTLS was accepted
/// (`Some(stream)`, for the handshake). `greet`: send the 220 greeting first (not after
/// STARTTLS, RFC 3207 §4.2: the client starts over with EHLO).
async fn session<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    state: &State,
    phase: Phase,
    greet: bool,
) -> std::io::Result<Option<S>> {
    let mut reader = BufReader::new(stream);
    if greet {
        reader.get_mut().write_all(b"220 truxe-test-sink ESMTP ready\r\n").await?;
    }
    let mut mail_from: Option<String> = None;
    let mut rcpt_to: Vec<String> = Vec::new();
    let mut auth: Option<(String, String)> = None;
    while let Some(line) = read_line(&mut reader).await? {
        let line = String::from_utf8_lossy(&line).into_owned();
        let verb = line.split_whitespace().next().unwrap_or("").to_ascii_uppercase();
        let logged = if verb == "AUTH" { "AUTH [redacted]".to_string() } else { line.clone() };
        state.commands.lock().expect("commands").push(logged);
        if phase == Phase::OfferStartTls
            && !matches!(verb.as_str(), "EHLO" | "HELO" | "STARTTLS" | "NOOP" | "RSET" | "QUIT")
        {
            reader.get_mut().write_all(b"530 5.7.0 Must issue a STARTTLS command first\r\n").await?;
            continue;
        }
        let write = reader.get_mut();
        match verb.as_str() {
            "EHLO" => {
                let ehlo: &[u8] = if phase == Phase::OfferStartTls {
                    b"250-truxe-test-sink\r\n250-8BITMIME\r\n250-STARTTLS\r\n250 SIZE 10485760\r\n"
                } else {
                    b"250-truxe-test-sink\r\n250-8BITMIME\r\n250-AUTH PLAIN LOGIN\r\n250 SIZE 10485760\r\n"
                };
                write.write_all(ehlo).await?
            }
            "HELO" => write.write_all(b"250 truxe-test-sink\r\n").await?,
            "STARTTLS" if phase == Phase::OfferStartTls => {
                write.write_all(b"220 2.0.0 ready to start TLS\r\n").await?;
                write.flush().await?;
                return Ok(Some(reader.into_inner()));
            }
            "AUTH" => {
                let mut words = line.split_whitespace().skip(1);
                let mechanism = words.next().unwrap_or("").to_ascii_uppercase();
                let initial = words.next().map(str::to_string);
                match mechanism.as_str() {
                    "PLAIN" => {
                        let response = match initial {
                            Some(response) => response,
                            None => {
                                reader.get_mut().write_all(b"334 \r\n").await?;
                                String::from_utf8_lossy(&read_line(&mut reader).await?.unwrap_or_default()).into_owned()
                            }
                        };
                        let decoded = decode_b64_text(&response);
                        let mut fields = decoded.split('\0').skip(1);
                        let user = fields.next().unwrap_or("").to_string();
                        let password = fields.next().unwrap_or("").to_string();
                        auth = Some((user, password));
                        reader.get_mut().write_all(b"235 2.7.0 authenticated\r\n").await?;
                    }
                    "LOGIN" => {
                        reader.get_mut().write_all(b"334 VXNlcm5hbWU6\r\n").await?;
                        let user = read_line(&mut reader).await?.unwrap_or_default();
                        reader.get_mut().write_all(b"334 UGFzc3dvcmQ6\r\n").await?;
                        let password = read_line(&mut reader).await?.unwrap_or_default();
                        auth = Some((
                            decode_b64_text(&String::from_utf8_lossy(&user)),
                            decode_b64_text(&String::from_utf8_lossy(&password)),
                        ));
                        reader.get_mut().write_all(b"235 2.7.0 authenticated\r\n").await?;
                    }
                    _ => reader.get_mut().write_all(b"504 5.5.4 unrecognised authentication type\r\n").await?,
                }
            }
            "MAIL" => {
                mail_from = Some(path_argument(&line));
                rcpt_to.clear();
                write.write_all(b"250 2.1.0 ok\r\n").await?;
            }
            "RCPT" => {
                if mail_from.is_none() {
                    write.write_all(b"503 5.5.1 MAIL first\r\n").await?;
                } else {
                    rcpt_to.push(path_argument(&line));
                    write.write_all(b"250 2.1.5 ok\r\n").await?;
                }
            }
            "DATA" => {
                if rcpt_to.is_empty() {
                    write.write_all(b"503 5.5.1 RCPT first\r\n").await?;
                    continue;
                }
                write.write_all(b"354 end data with <CR><LF>.<CR><LF>\r\n").await?;
                let mut data = Vec::new();
                loop {
                    let Some(line) = read_line(&mut reader).await? else {
                        return Ok(None);
                    };
                    if line == b"." {
                        break;
                    }
                    // RFC 5321 §4.5.2: a leading dot was doubled by the client.
                    let line = if line.starts_with(b".") { &line[1..] } else { &line[..] };
                    data.extend_from_slice(line);
                    data.extend_from_slice(b"\r\n");
                }
                let message = RawMessage {
                    mail_from: mail_from.take().unwrap_or_default(),
                    rcpt_to: std::mem::take(&mut rcpt_to),
                    auth: auth.clone(),
                    tls: phase == Phase::Encrypted,
                    data,
                };
                state.all.lock().expect("messages").push(message.clone());
                state.queue.lock().expect("queue").push_back(message);
                state.notify.notify_waiters();
                reader.get_mut().write_all(b"250 2.0.0 queued\r\n").await?;
            }
            "RSET" => {
                mail_from = None;
                rcpt_to.clear();
                write.write_all(b"250 2.0.0 ok\r\n").await?;
            }
            "NOOP" => write.write_all(b"250 2.0.0 ok\r\n").await?,
            "QUIT" => {
                write.write_all(b"221 2.0.0 bye\r\n").await?;
                return Ok(None);
            }
            _ => write.write_all(b"502 5.5.2 command not implemented\r\n").await?,
        }
    }
    Ok(None)
}

/// One MIME part, its body decoded.
#[derive(Debug, Clone)]
pub struct Part {
    /// Lowercased, without parameters (`text/plain`).
    pub content_type: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl RawMessage {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.data).into_owned()
    }

    /// A top-level header (unfolded), by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<String> {
        let text = self.text();
        let (head, _) = split_head(&text);
        find_header(&parse_headers(head), name)
    }

    /// The leaf parts of the message (one, for a non-multipart message).
    pub fn parts(&self) -> Vec<Part> {
        let text = self.text();
        let mut parts = Vec::new();
        collect_parts(&text, &mut parts);
        parts
    }

    fn part(&self, content_type: &str) -> String {
        self.parts()
            .into_iter()
            .find(|p| p.content_type == content_type)
            .map(|p| p.body)
            .unwrap_or_else(|| panic!("the message has no {content_type} part:\n{}", self.text()))
    }

    /// The decoded `text/plain` part; panics when there is none.
    pub fn text_part(&self) -> String {
        self.part("text/plain")
    }

    /// The decoded `text/html` part; panics when there is none.
    pub fn html_part(&self) -> String {
        self.part("text/html")
    }

    /// The first URL in the text part that starts with `prefix`.
    pub fn url_in_text(&self, prefix: &str) -> Option<String> {
        extract_url(&self.text_part(), prefix)
    }
}

/// The first whitespace-delimited token of `text` that starts with `prefix`, without trailing
/// punctuation that mail clients would not treat as part of a link.
pub fn extract_url(text: &str, prefix: &str) -> Option<String> {
    let start = text.find(prefix)?;
    let url: String =
        text[start..].chars().take_while(|c| !c.is_whitespace() && !matches!(c, '<' | '>' | '"')).collect();
    Some(url.trim_end_matches(['.', ',', ')', ';']).to_string())
}

fn split_head(text: &str) -> (&str, &str) {
    match text.find("\r\n\r\n") {
        Some(i) => (&text[..i], &text[i + 4..]),
        None => match text.find("\n\n") {
            Some(i) => (&text[..i], &text[i + 2..]),
            None => (text, ""),
        },
    }
}

fn parse_headers(head: &str) -> Vec<(String, String)> {
    let mut headers: Vec<(String, String)> = Vec::new();
    for line in head.lines() {
        if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = headers.last_mut() {
                value.push(' ');
                value.push_str(line.trim());
            }
        } else if let Some((name, value)) = line.split_once(':') {
            headers.push((name.trim().to_string(), value.trim().to_string()));
        }
    }
    headers
}

fn find_header(headers: &[(String, String)], name: &str) -> Option<String> {
    headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.clone())
}

/// `multipart/alternative; boundary="abc"` → ("multipart/alternative", Some("abc")).
fn content_type(value: &str) -> (String, Option<String>) {
    let mut pieces = value.split(';');
    let kind = pieces.next().unwrap_or("").trim().to_ascii_lowercase();
    let boundary = pieces.find_map(|p| {
        let (name, value) = p.trim().split_once('=')?;
        name.trim().eq_ignore_ascii_case("boundary").then(|| value.trim().trim_matches('"').to_string())
    });
    (kind, boundary)
}

fn collect_parts(entity: &str, parts: &mut Vec<Part>) {
    let (head, body) = split_head(entity);
    let headers = parse_headers(head);
    let (kind, boundary) = content_type(&find_header(&headers, "Content-Type").unwrap_or_else(|| "text/plain".into()));
    if let (true, Some(boundary)) = (kind.starts_with("multipart/"), boundary) {
        let delimiter = format!("--{boundary}");
        for (i, chunk) in body.split(&delimiter).enumerate() {
            // Before the first delimiter is the preamble; after the closing one, "--".
            if i == 0 || chunk.starts_with("--") {
                continue;
            }
            let chunk = chunk.strip_prefix("\r\n").unwrap_or(chunk);
            let chunk = chunk.strip_suffix("\r\n").unwrap_or(chunk);
            collect_parts(chunk, parts);
        }
        return;
    }
    let encoding = find_header(&headers, "Content-Transfer-Encoding").unwrap_or_default().to_ascii_lowercase();
    let body = match encoding.as_str() {
        "quoted-printable" => decode_quoted_printable(body),
        "base64" => {
            let compact: String = body.chars().filter(|c| !c.is_whitespace()).collect();
            let bytes = base64::engine::general_purpose::STANDARD.decode(compact).expect("valid base64 part");
            String::from_utf8_lossy(&bytes).into_owned()
        }
        _ => body.to_string(),
    };
    parts.push(Part { content_type: kind, headers, body });
}

/// RFC 2045 §6.7: `=XX` octets and `=` soft line breaks.
pub fn decode_quoted_printable(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'=' {
            if bytes[i + 1..].starts_with(b"\r\n") {
                i += 3;
                continue;
            }
            if bytes[i + 1..].starts_with(b"\n") {
                i += 2;
                continue;
            }
            let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
            if let Some(value) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(value);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_printable_soft_breaks_and_octets() {
        assert_eq!(decode_quoted_printable("http://x/a?b=3Dc&d=\r\n=3De"), "http://x/a?b=c&d=e");
        assert_eq!(decode_quoted_printable("caf=C3=A9=\nok"), "caféok");
        assert_eq!(decode_quoted_printable("a=zz"), "a=zz");
    }

    #[test]
    fn urls_are_extracted_whole() {
        let text = "Hello,\r\n\r\nhttps://auth.example/login/magic?token=abc&x=1\r\n\r\nbye.";
        assert_eq!(
            extract_url(text, "https://auth.example/").as_deref(),
            Some("https://auth.example/login/magic?token=abc&x=1")
        );
        assert_eq!(extract_url("see <https://a.example/x>.", "https://").as_deref(), Some("https://a.example/x"));
        assert_eq!(extract_url("nothing", "https://"), None);
    }

    #[test]
    fn envelope_paths() {
        assert_eq!(path_argument("MAIL FROM:<a@b.example> BODY=8BITMIME"), "a@b.example");
        assert_eq!(path_argument("RCPT TO: <c@d.example>"), "c@d.example");
        assert_eq!(path_argument("MAIL FROM:<>"), "");
    }
}
