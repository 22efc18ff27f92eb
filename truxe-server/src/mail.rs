//! Outgoing mail: magic-link messages over SMTP (lettre, one pooled async transport built at
//! start), or, in development without SMTP, into the log.
//!
//! Transport security follows the port and `SMTP_SECURE` (see [`TlsMode::choose`]): implicit
//! TLS on 465 (or any port with `SMTP_TLS_IMPLICIT=true`); STARTTLS, required, on 587, whenever
//! `SMTP_SECURE=true`, and for every host that is not loopback; a plaintext session only to a
//! loopback relay with `SMTP_SECURE=false` (a local Postfix or a test listener), since a sign-in
//! link read on the wire is a sign-in. The certificate is checked against `SMTP_TLS_CA` when
//! given, else the system trust store, unless `SMTP_TLS_REJECT_UNAUTHORIZED=false`.

use std::fmt;
use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::PoolConfig;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{Address, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use tokio::runtime::Handle;
use tokio::sync::watch;

use crate::config::{Config, SmtpConfig};

pub const MAGIC_LINK_SUBJECT: &str = "Your sign-in link";
/// The product name in mails when `EMAIL_FROM_NAME` is not set.
pub const DEFAULT_FROM_NAME: &str = "Truxe";

const SMTP_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, thiserror::Error)]
pub enum MailError {
    #[error("SMTP is not configured (set SMTP_HOST and EMAIL_FROM)")]
    NotConfigured,
    #[error("mail configuration: {0}")]
    Config(String),
    /// The address itself is left out: error messages end up in logs.
    #[error("the recipient is not a deliverable email address")]
    Address,
    #[error("cannot compose the message: {0}")]
    Message(String),
    #[error("sending mail through {server} failed: {reason}")]
    Send { server: String, reason: String },
}

/// How the SMTP session is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// TLS from the first byte (SMTPS, port 465).
    Implicit,
    /// Plaintext greeting, then STARTTLS; a server that does not offer it is refused.
    StartTlsRequired,
    /// No TLS at all: loopback relays only.
    Plain,
}

impl TlsMode {
    pub fn choose(host: &str, port: u16, secure: bool, implicit: bool) -> TlsMode {
        match port {
            _ if implicit => TlsMode::Implicit,
            465 => TlsMode::Implicit,
            587 => TlsMode::StartTlsRequired,
            _ if secure || !is_loopback(host) => TlsMode::StartTlsRequired,
            _ => TlsMode::Plain,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TlsMode::Implicit => "implicit TLS",
            TlsMode::StartTlsRequired => "STARTTLS",
            TlsMode::Plain => "plaintext (loopback)",
        }
    }
}

fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host.to_ascii_lowercase().ends_with(".localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

enum Delivery {
    Smtp {
        transport: AsyncSmtpTransport<Tokio1Executor>,
        server: String,
    },
    /// Development without SMTP: the message, link included, goes to the log.
    Log,
}

/// Sends Truxe's mails. Cheap to share behind an `Arc` or in app data; the SMTP connections are
/// pooled inside.
pub struct Mailer {
    delivery: Delivery,
    from: Mailbox,
    /// Background mail work, counted so that a shutdown (or a test) can wait for it.
    jobs: Arc<watch::Sender<MailJobs>>,
    /// The runtime the mailer was built in: background work runs there, not on the HTTP worker
    /// that asked for it, so a graceful shutdown can let it finish.
    runtime: Option<Handle>,
}

/// Counts of background mail work ([`Mailer::spawn_job`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MailJobs {
    /// Started and not finished yet.
    pub in_flight: u64,
    /// Finished, whatever the outcome (sent, failed, or nothing to send).
    pub finished: u64,
}

/// One piece of background mail work; counted as finished when dropped.
#[derive(Debug)]
pub struct MailJob {
    jobs: Arc<watch::Sender<MailJobs>>,
}

impl Drop for MailJob {
    fn drop(&mut self) {
        self.jobs.send_modify(|jobs| {
            jobs.in_flight = jobs.in_flight.saturating_sub(1);
            jobs.finished = jobs.finished.saturating_add(1);
        });
    }
}

fn new_jobs() -> Arc<watch::Sender<MailJobs>> {
    Arc::new(watch::Sender::new(MailJobs::default()))
}

impl fmt::Debug for Mailer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mailer").field("delivery", &self.describe()).field("from", &self.from.to_string()).finish()
    }
}

impl Mailer {
    /// SMTP from `config.smtp`; without it, the log mailer in development and
    /// [`MailError::NotConfigured`] in production. Must run inside the tokio runtime (the pool
    /// starts its idle-connection reaper there).
    pub fn from_config(config: &Config) -> Result<Mailer, MailError> {
        match &config.smtp {
            Some(smtp) => Mailer::smtp(smtp),
            None if config.is_production() => Err(MailError::NotConfigured),
            None => Ok(Mailer::log(None, None)),
        }
    }

    /// A pooled SMTP transport; connects lazily, on the first message.
    pub fn smtp(smtp: &SmtpConfig) -> Result<Mailer, MailError> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(MailError::Config("the SMTP transport must be built inside the tokio runtime".to_string()));
        }
        let from = from_mailbox(&smtp.from, smtp.from_name.as_deref())?;
        let mode = TlsMode::choose(&smtp.host, smtp.port, smtp.secure, smtp.implicit_tls);
        let tls_parameters = || tls_parameters(smtp);
        let tls = match mode {
            TlsMode::Implicit => Tls::Wrapper(tls_parameters()?),
            TlsMode::StartTlsRequired => Tls::Required(tls_parameters()?),
            TlsMode::Plain => Tls::None,
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(smtp.host.as_str())
            .port(smtp.port)
            .tls(tls)
            .timeout(Some(SMTP_TIMEOUT))
            .pool_config(PoolConfig::new().max_size(4).idle_timeout(Duration::from_secs(60)));
        match (&smtp.user, &smtp.password) {
            (Some(user), Some(password)) => {
                builder = builder.credentials(Credentials::new(user.clone(), password.secret().clone()));
            }
            (Some(_), None) => {
                return Err(MailError::Config("SMTP_USER is set without SMTP_PASSWORD".to_string()));
            }
            (None, Some(_)) => {
                return Err(MailError::Config("SMTP_PASSWORD is set without SMTP_USER".to_string()));
            }
            (None, None) => {}
        }
        let server = format!("{}:{} ({})", smtp.host, smtp.port, mode.as_str());
        Ok(Mailer {
            delivery: Delivery::Smtp { transport: builder.build(), server },
            from,
            jobs: new_jobs(),
            runtime: Handle::try_current().ok(),
        })
    }

    /// The development mailer: messages go to the log at info level.
    pub fn log(from: Option<&str>, from_name: Option<&str>) -> Mailer {
        let from = from.and_then(|address| from_mailbox(address, from_name).ok()).unwrap_or_else(|| {
            Mailbox::new(Some(DEFAULT_FROM_NAME.to_string()), Address::new_dangerous("truxe", "localhost"))
        });
        Mailer { delivery: Delivery::Log, from, jobs: new_jobs(), runtime: Handle::try_current().ok() }
    }

    pub fn is_log(&self) -> bool {
        matches!(self.delivery, Delivery::Log)
    }

    /// Runs `work` (typically the look-ups that decide whether to mail, then the send) in the
    /// background, counted in [`Mailer::jobs`] from this call until it finishes, so callers can
    /// answer at once and [`Mailer::flush`] can wait for it. Failures are `work`'s to log.
    pub fn spawn_job<F>(&self, work: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.jobs.send_modify(|jobs| jobs.in_flight = jobs.in_flight.saturating_add(1));
        let job = MailJob { jobs: Arc::clone(&self.jobs) };
        match self.runtime.clone().or_else(|| Handle::try_current().ok()) {
            Some(runtime) => {
                runtime.spawn(async move {
                    work.await;
                    drop(job);
                });
            }
            // Only a mailer used outside any runtime gets here; `job` counts as finished.
            None => tracing::error!("no async runtime to send mail on; the mail is dropped"),
        }
    }

    /// Background mail work started and finished so far.
    pub fn jobs(&self) -> MailJobs {
        *self.jobs.borrow()
    }

    /// Waits until no background mail work is in flight: everything started before this call
    /// has been sent, has failed (and been logged), or found nothing to send.
    pub async fn flush(&self) {
        let mut jobs = self.jobs.subscribe();
        // The sender lives in `self`, so the channel cannot close while we wait.
        let _ = jobs.wait_for(|jobs| jobs.in_flight == 0).await;
    }

    /// For the start-up log: where mail goes, never a credential.
    pub fn describe(&self) -> String {
        match &self.delivery {
            Delivery::Smtp { server, .. } => format!("smtp {server}"),
            Delivery::Log => "log (no SMTP configured; development only)".to_string(),
        }
    }

    /// Checks that the SMTP server answers (for readiness checks); `true` for the log mailer.
    pub async fn test_connection(&self) -> Result<bool, MailError> {
        match &self.delivery {
            Delivery::Smtp { transport, server } => transport
                .test_connection()
                .await
                .map_err(|e| MailError::Send { server: server.clone(), reason: error_chain(&e) }),
            Delivery::Log => Ok(true),
        }
    }

    /// Sends the sign-in link: multipart/alternative with a plain-text and an HTML part.
    pub async fn send_magic_link(&self, to: &str, link: &str, expires_in: Duration) -> Result<(), MailError> {
        let to_address: Address = to.parse().map_err(|_| MailError::Address)?;
        let product = self.from.name.as_deref().unwrap_or(DEFAULT_FROM_NAME);
        match &self.delivery {
            Delivery::Smtp { transport, server } => {
                let message = magic_link_message(&self.from, Mailbox::new(None, to_address), link, expires_in)?;
                transport
                    .send(message)
                    .await
                    .map_err(|e| MailError::Send { server: server.clone(), reason: error_chain(&e) })?;
                tracing::info!(to_domain = %to_address_domain(to), "magic-link email sent");
                Ok(())
            }
            Delivery::Log => {
                // The development shortcut SPEC describes: no SMTP, so the link is in the log.
                tracing::info!(
                    to = %to_address,
                    subject = MAGIC_LINK_SUBJECT,
                    %link,
                    expires_in = %human_duration(expires_in),
                    "magic-link email not sent (no SMTP configured; development mode). {}",
                    magic_link_text(product, link, expires_in).replace('\n', " ")
                );
                Ok(())
            }
        }
    }
}

/// The certificate checks of an SMTP TLS session: `SMTP_TLS_CA` added to the system trust
/// store, or no checks at all with `SMTP_TLS_REJECT_UNAUTHORIZED=false`.
fn tls_parameters(smtp: &SmtpConfig) -> Result<TlsParameters, MailError> {
    let error = |e: &dyn fmt::Display| MailError::Config(format!("TLS for SMTP_HOST {:?}: {e}", smtp.host));
    let mut builder = TlsParameters::builder(smtp.host.clone());
    if !smtp.tls_reject_unauthorized {
        builder = builder.dangerous_accept_invalid_certs(true).dangerous_accept_invalid_hostnames(true);
    } else if let Some(ca) = &smtp.tls_ca {
        // One `Certificate` per certificate: native-tls reads only the first of a PEM file.
        let certs = openssl::x509::X509::stack_from_pem(&ca.pem).map_err(|e| error(&e))?;
        for cert in certs {
            let pem = cert.to_pem().map_err(|e| error(&e))?;
            builder = builder.add_root_certificate(Certificate::from_pem(&pem).map_err(|e| error(&e))?);
        }
    }
    builder.build().map_err(|e| error(&e))
}

/// An error with its causes (lettre keeps OpenSSL's reason, "certificate verify failed", in the
/// source, not in its own message).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    if message.contains("certificate") {
        message.push_str(
            " (a private CA: set SMTP_TLS_CA to its PEM file; a self-signed certificate: SMTP_TLS_REJECT_UNAUTHORIZED=false)",
        );
    }
    message
}

fn to_address_domain(to: &str) -> &str {
    to.rsplit_once('@').map_or("", |(_, domain)| domain)
}

fn from_mailbox(address: &str, name: Option<&str>) -> Result<Mailbox, MailError> {
    let address: Address =
        address.trim().parse().map_err(|e| MailError::Config(format!("EMAIL_FROM {address:?}: {e}")))?;
    let name = name.map(str::trim).filter(|n| !n.is_empty()).unwrap_or(DEFAULT_FROM_NAME);
    Ok(Mailbox::new(Some(name.to_string()), address))
}

/// The whole message, ready for any transport.
pub fn magic_link_message(from: &Mailbox, to: Mailbox, link: &str, expires_in: Duration) -> Result<Message, MailError> {
    let product = from.name.as_deref().unwrap_or(DEFAULT_FROM_NAME);
    Message::builder()
        .from(from.clone())
        .to(to)
        .subject(MAGIC_LINK_SUBJECT)
        .date_now()
        // <random@hostname>: messages without one score worse with spam filters.
        .message_id(None)
        .message_id(None)
        .multipart(
            MultiPart::alternative()
                .singlepart(
                    SinglePart::builder()
                        .content_type(ContentType::TEXT_PLAIN)
                        .body(magic_link_text(product, link, expires_in)),
                )
                .singlepart(
                    SinglePart::builder()
                        .content_type(ContentType::TEXT_HTML)
                        .body(magic_link_html(product, link, expires_in)),
                ),
        )
        .map_err(|e| MailError::Message(e.to_string()))
}

/// The plain-text part. The link stands alone on its line so that mail clients linkify it whole.
pub fn magic_link_text(product: &str, link: &str, expires_in: Duration) -> String {
    let expires = human_duration(expires_in);
    format!(
        "Hello,\n\n\
         use the link below to sign in to {product}. It works once and expires in {expires}.\n\n\
         {link}\n\n\
         If you did not ask to sign in, ignore this email: nobody can sign in without the link.\n"
    )
}

/// The HTML part; everything interpolated is escaped.
pub fn magic_link_html(product: &str, link: &str, expires_in: Duration) -> String {
    let product = escape_html(product);
    let link = escape_html(link);
    let expires = escape_html(&human_duration(expires_in));
    format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{MAGIC_LINK_SUBJECT}</title></head>\n\
         <body style=\"font-family: sans-serif; line-height: 1.5\">\n\
         <p>Hello,</p>\n\
         <p>use the button below to sign in to {product}. It works once and expires in {expires}.</p>\n\
         <p><a href=\"{link}\" style=\"display: inline-block; padding: 10px 18px; background: #1a56db; \
         color: #ffffff; text-decoration: none; border-radius: 4px\">Sign in</a></p>\n\
         <p>Or copy this link into your browser:<br>{link}</p>\n\
         <p>If you did not ask to sign in, ignore this email: nobody can sign in without the link.</p>\n\
         </body></html>\n"
    )
}

/// Escapes text for HTML element content and double-quoted attribute values.
pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// "15 minutes", "1 hour", "90 seconds".
pub fn human_duration(duration: Duration) -> String {
    let secs = duration.as_secs();
    let plural = |n: u64, unit: &str| if n == 1 { format!("1 {unit}") } else { format!("{n} {unit}s") };
    match secs {
        0 => "a moment".to_string(),
        s if s % 86_400 == 0 => plural(s / 86_400, "day"),
        s if s % 3_600 == 0 => plural(s / 3_600, "hour"),
        s if s % 60 == 0 => plural(s / 60, "minute"),
        s => plural(s, "second"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_mode_follows_port_secure_and_host() {
        use TlsMode::*;
        let cases = [
            ("smtp.example.com", 465, false, Implicit),
            ("smtp.example.com", 465, true, Implicit),
            ("smtp.example.com", 587, false, StartTlsRequired),
            ("smtp.example.com", 587, true, StartTlsRequired),
            ("smtp.example.com", 25, false, StartTlsRequired),
            ("smtp.example.com", 2525, true, StartTlsRequired),
            ("127.0.0.1", 2525, false, Plain),
            ("localhost", 25, false, Plain),
            ("[::1]", 1025, false, Plain),
            ("127.0.0.1", 2525, true, StartTlsRequired),
            ("127.0.0.1", 587, false, StartTlsRequired),
            ("127.0.0.1", 465, false, Implicit),
            ("10.0.0.5", 25, false, StartTlsRequired),
        ];
        for (host, port, secure, expected) in cases {
            assert_eq!(TlsMode::choose(host, port, secure, false), expected, "{host}:{port} secure={secure}");
        }
        for (host, port, secure) in [("127.0.0.1", 2465, false), ("smtp.example.com", 587, true)] {
            assert_eq!(TlsMode::choose(host, port, secure, true), Implicit, "{host}:{port} implicit");
        }
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(human_duration(Duration::from_secs(900)), "15 minutes");
        assert_eq!(human_duration(Duration::from_secs(60)), "1 minute");
        assert_eq!(human_duration(Duration::from_secs(3600)), "1 hour");
        assert_eq!(human_duration(Duration::from_secs(7200)), "2 hours");
        assert_eq!(human_duration(Duration::from_secs(86_400)), "1 day");
        assert_eq!(human_duration(Duration::from_secs(90)), "90 seconds");
    }

    #[test]
    fn the_html_part_escapes_the_link() {
        let link = "https://auth.example.com/login/magic?token=a_b-c&return=\"x\"<y>";
        let html = magic_link_html("Acme <Inc>", link, Duration::from_secs(900));
        assert!(
            html.contains(
                "href=\"https://auth.example.com/login/magic?token=a_b-c&amp;return=&quot;x&quot;&lt;y&gt;\""
            )
        );
        assert!(html.contains("Acme &lt;Inc&gt;"));
        assert!(!html.contains("<y>"));
        let text = magic_link_text("Acme", link, Duration::from_secs(900));
        assert!(text.contains(&format!("\n{link}\n")));
        assert!(text.contains("15 minutes"));
    }

    #[test]
    fn the_message_is_multipart_alternative() {
        let from = from_mailbox("noreply@example.com", Some("Acme Login")).expect("from");
        let to: Mailbox = "alice@example.org".parse().expect("to");
        let link = "https://auth.example.com/login/magic?token=abc";
        let message = magic_link_message(&from, to, link, Duration::from_secs(900)).expect("message");
        let raw = String::from_utf8(message.formatted()).expect("utf8");
        assert!(raw.contains("From: \"Acme Login\" <noreply@example.com>"), "{raw}");
        assert!(raw.contains("To: alice@example.org"), "{raw}");
        assert!(raw.contains("Subject: Your sign-in link"), "{raw}");
        assert!(raw.contains("multipart/alternative"), "{raw}");
        assert!(raw.contains("text/plain") && raw.contains("text/html"), "{raw}");
    }

    #[test]
    fn log_mailer_without_smtp_in_development_only() {
        let development = Config::from_lookup(&|_: &str| None).expect("config");
        let mailer = Mailer::from_config(&development).expect("log mailer");
        assert!(mailer.is_log());
        assert!(mailer.describe().starts_with("log"));
        assert!(from_mailbox("not an address", None).is_err());
    }

    #[test]
    fn smtp_needs_the_runtime() {
        let smtp = SmtpConfig {
            host: "127.0.0.1".to_string(),
            port: 2525,
            secure: false,
            implicit_tls: false,
            tls_ca: None,
            tls_reject_unauthorized: true,
            user: None,
            password: None,
            from: "noreply@example.com".to_string(),
            from_name: None,
        };
        assert!(matches!(Mailer::smtp(&smtp), Err(MailError::Config(_))));
    }
}
