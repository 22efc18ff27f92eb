//! Magic-link mail through lettre to a real SMTP listener on loopback.

use std::time::Duration;

use truxe_server::mail::{MailError, Mailer};

use crate::support::smtp::SmtpSink;
use crate::support::{config_from, free_port};

const WAIT: Duration = Duration::from_secs(10);

fn mailer_for(port: u16, extra: &[(&str, &str)], dir: &tempfile::TempDir) -> Mailer {
    let port = port.to_string();
    let mut vars = vec![
        ("SMTP_HOST", "127.0.0.1"),
        ("SMTP_PORT", port.as_str()),
        ("SMTP_SECURE", "false"),
        ("EMAIL_FROM", "noreply@truxe.test"),
        ("EMAIL_FROM_NAME", "Truxe Test"),
    ];
    vars.extend_from_slice(extra);
    let config = config_from(&vars, dir);
    Mailer::from_config(&config).expect("SMTP mailer")
}

/// Long enough for quoted-printable soft line breaks, with every character that mail encodings
/// and HTML escaping like to damage.
fn tricky_link() -> String {
    format!(
        "http://127.0.0.1:3001/login/magic?token={}-_x&return_to=%2Foauth-provider%2Fauthorize%3Fclient_id%3Dcl_abc%26state%3D%3D",
        "AbCdEfGhIjKlMnOpQrStUvWxYz0123456789".repeat(2)
    )
}

#[tokio::test]
async fn magic_link_mail_arrives_with_both_parts_and_the_link_intact() {
    let dir = tempfile::tempdir().expect("tmp");
    let sink = SmtpSink::start().await;
    let mailer = mailer_for(sink.port(), &[], &dir);
    assert!(!mailer.is_log());
    let link = tricky_link();

    mailer.send_magic_link("alice@example.com", &link, Duration::from_secs(15 * 60)).await.expect("sent");
    let message = sink.wait_for_message(WAIT).await;

    assert_eq!(message.mail_from, "noreply@truxe.test");
    assert_eq!(message.rcpt_to, ["alice@example.com"]);
    assert_eq!(message.auth, None, "no credentials configured, none sent");
    let from = message.header("From").expect("From");
    assert!(from.contains("Truxe Test") && from.contains("<noreply@truxe.test>"), "{from}");
    assert!(message.header("To").expect("To").contains("alice@example.com"));
    assert_eq!(message.header("Subject").as_deref(), Some("Your sign-in link"));
    assert!(message.header("Date").is_some());
    assert!(message.header("Message-ID").is_some());
    assert!(message.header("Content-Type").expect("type").starts_with("multipart/alternative"));

    let parts = message.parts();
    let kinds: Vec<&str> = parts.iter().map(|p| p.content_type.as_str()).collect();
    assert_eq!(kinds, ["text/plain", "text/html"], "plain first, so clients prefer the HTML");

    assert_eq!(message.url_in_text("http://127.0.0.1:3001/login/magic").as_deref(), Some(link.as_str()));
    let text = message.text_part();
    assert!(text.contains("15 minutes"), "{text}");

    let html = message.html_part();
    let escaped = link.replace('&', "&amp;");
    assert!(html.contains(&format!("href=\"{escaped}\"")), "{html}");
    assert!(!html.contains(&format!("href=\"{link}\"")), "the & in the link is escaped: {html}");
    assert!(html.contains("15 minutes"));
}

#[tokio::test]
async fn the_pooled_transport_delivers_several_messages() {
    let dir = tempfile::tempdir().expect("tmp");
    let sink = SmtpSink::start().await;
    let mailer = std::sync::Arc::new(mailer_for(sink.port(), &[], &dir));
    let sends = (0..5).map(|i| {
        let mailer = std::sync::Arc::clone(&mailer);
        tokio::spawn(async move {
            let link = format!("http://127.0.0.1:3001/login/magic?token=t{i}");
            mailer.send_magic_link(&format!("user{i}@example.com"), &link, Duration::from_secs(600)).await
        })
    });
    for send in sends.collect::<Vec<_>>() {
        send.await.expect("task").expect("sent");
    }
    // Sequential sends reuse pooled connections (RSET/NOOP between messages).
    mailer.send_magic_link("last@example.com", "http://127.0.0.1:3001/x", Duration::from_secs(60)).await.expect("sent");
    let mut recipients = Vec::new();
    for _ in 0..6 {
        recipients.extend(sink.wait_for_message(WAIT).await.rcpt_to);
    }
    recipients.sort();
    let mut expected: Vec<String> = (0..5).map(|i| format!("user{i}@example.com")).collect();
    expected.push("last@example.com".to_string());
    expected.sort();
    assert_eq!(recipients, expected);
    assert_eq!(sink.messages().len(), 6);
}

#[tokio::test]
async fn smtp_credentials_are_sent() {
    let dir = tempfile::tempdir().expect("tmp");
    let sink = SmtpSink::start().await;
    let mailer = mailer_for(sink.port(), &[("SMTP_USER", "mailer@truxe.test"), ("SMTP_PASSWORD", "s3cret pass")], &dir);
    mailer.send_magic_link("bob@example.com", "http://127.0.0.1:3001/m", Duration::from_secs(900)).await.expect("sent");
    let message = sink.wait_for_message(WAIT).await;
    assert_eq!(message.auth, Some(("mailer@truxe.test".to_string(), "s3cret pass".to_string())));
    let debug = format!("{mailer:?}");
    assert!(!debug.contains("s3cret"), "{debug}");
}

#[tokio::test]
async fn delivery_problems_are_errors_not_panics() {
    let dir = tempfile::tempdir().expect("tmp");
    let nobody = free_port();
    let mailer = mailer_for(nobody, &[], &dir);
    let error = mailer
        .send_magic_link("carol@example.com", "http://127.0.0.1:3001/m", Duration::from_secs(900))
        .await
        .expect_err("nobody listens");
    assert!(matches!(error, MailError::Send { .. }), "{error:?}");
    assert!(error.to_string().contains(&format!("127.0.0.1:{nobody}")), "names the server: {error}");

    let sink = SmtpSink::start().await;
    let mailer = mailer_for(sink.port(), &[], &dir);
    let error = mailer
        .send_magic_link("not an address", "http://127.0.0.1:3001/m", Duration::from_secs(900))
        .await
        .expect_err("bad recipient");
    assert!(matches!(error, MailError::Address), "{error:?}");
    assert!(sink.messages().is_empty());
}

#[tokio::test]
async fn without_smtp_development_logs_and_production_refuses() {
    let dir = tempfile::tempdir().expect("tmp");
    let development = config_from(&[], &dir);
    let mailer = Mailer::from_config(&development).expect("log mailer");
    assert!(mailer.is_log());
    mailer
        .send_magic_link("dave@example.com", "http://127.0.0.1:3001/m", Duration::from_secs(900))
        .await
        .expect("logged");
    let mut production = development.clone();
    production.mode = truxe_server::config::Mode::Production;
    assert!(matches!(Mailer::from_config(&production), Err(MailError::NotConfigured)));

    // A remote relay never gets a plaintext session, whatever SMTP_SECURE says.
    let remote = config_from(
        &[("SMTP_HOST", "smtp.example.com"), ("SMTP_PORT", "2525"), ("EMAIL_FROM", "noreply@example.com")],
        &dir,
    );
    let mailer = Mailer::from_config(&remote).expect("smtp mailer");
    assert!(mailer.describe().contains("STARTTLS"), "{}", mailer.describe());
}

/// Background mail work is counted from the moment it is handed over until it finishes, so a
/// caller (a test, a graceful shutdown) can wait for it instead of sleeping.
#[tokio::test]
async fn background_mail_is_counted_and_flushed() {
    use truxe_server::mail::MailJobs;
    let dir = tempfile::tempdir().expect("tmp");
    let sink = SmtpSink::start().await;
    let mailer = std::sync::Arc::new(mailer_for(sink.port(), &[], &dir));
    assert_eq!(mailer.jobs(), MailJobs::default());
    mailer.flush().await;

    // A job that cannot finish before we let it: counted as in flight until then.
    let (release, released) = tokio::sync::oneshot::channel::<()>();
    let held = std::sync::Arc::clone(&mailer);
    mailer.spawn_job(async move {
        let _ = released.await;
        held.send_magic_link("held@example.com", "http://127.0.0.1:3001/h", Duration::from_secs(60))
            .await
            .expect("sent");
    });
    for i in 0..3 {
        let mailer_for_job = std::sync::Arc::clone(&mailer);
        mailer.spawn_job(async move {
            let link = format!("http://127.0.0.1:3001/login/magic?token=b{i}");
            mailer_for_job
                .send_magic_link(&format!("b{i}@example.com"), &link, Duration::from_secs(60))
                .await
                .expect("sent");
        });
    }
    assert_eq!(mailer.jobs().in_flight + mailer.jobs().finished, 4, "counted when handed over");
    let waiting = {
        let mailer = std::sync::Arc::clone(&mailer);
        tokio::spawn(async move { mailer.flush().await })
    };
    for _ in 0..3 {
        sink.wait_for_message(WAIT).await;
    }
    assert!(!waiting.is_finished(), "flush waits for the held job");
    assert!(mailer.jobs().in_flight >= 1, "{:?}", mailer.jobs());
    release.send(()).expect("release");
    waiting.await.expect("flush");
    assert_eq!(mailer.jobs(), MailJobs { in_flight: 0, finished: 4 });
    assert_eq!(sink.messages().len(), 4, "everything handed over was sent by the time flush returned");

    // A failed send is finished too (the failure is the job's to log).
    let dead = std::sync::Arc::new(mailer_for(free_port(), &[], &dir));
    let failing = std::sync::Arc::clone(&dead);
    let (report, outcome) = tokio::sync::oneshot::channel();
    dead.spawn_job(async move {
        let sent = failing.send_magic_link("x@example.com", "http://127.0.0.1:3001/x", Duration::from_secs(60)).await;
        let _ = report.send(sent.is_ok());
    });
    dead.flush().await;
    assert_eq!(dead.jobs(), MailJobs { in_flight: 0, finished: 1 });
    assert_eq!(outcome.await.ok(), Some(false), "the send failed");
}
