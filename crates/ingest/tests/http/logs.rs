//! Log lines stay short whatever the client sends, and refusals are rate limited.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tracing_subscriber::fmt::MakeWriter;

use crate::support::{Hooks, SECRET, Setup, push, repository_update, token};

/// Longest log line the hook path may write, in bytes.
const MAX_LINE: usize = 2048;

/// Collects formatted log output.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    fn lines(&self) -> Vec<String> {
        String::from_utf8(self.0.lock().clone())
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Captured {
    type Writer = Captured;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

fn capture() -> (Captured, tracing::subscriber::DefaultGuard) {
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(captured.clone())
        .finish();
    (
        captured.clone(),
        tracing::subscriber::set_default(subscriber),
    )
}

fn longest(lines: &[String]) -> usize {
    lines.iter().map(String::len).max().unwrap_or(0)
}

#[tokio::test(flavor = "current_thread")]
async fn a_huge_repository_update_is_summarised_in_one_short_line() {
    let (captured, _guard) = capture();
    let hooks = Hooks::start(Setup::default()).await;
    let body = repository_update(20_000);
    assert!(body.len() > 2_000_000, "{} bytes", body.len());
    let answer = hooks.post(body, &[token(SECRET)]).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let lines = captured.lines();
    let committed = lines
        .iter()
        .find(|l| l.contains("hook committed"))
        .expect("a hook committed line");
    assert!(committed.contains("records=20000"), "{committed}");
    assert!(committed.contains("pushes=20000"), "{committed}");
    assert!(committed.contains("project=team/big"), "{committed}");
    assert!(
        longest(&lines) < MAX_LINE,
        "a line of {} bytes",
        longest(&lines)
    );
}

#[tokio::test(flavor = "current_thread")]
async fn refusals_quoting_client_input_are_bounded() {
    let (captured, _guard) = capture();
    let hooks = Hooks::start(Setup::default()).await;
    // serde quotes a string where an object belongs, however long.
    let mut body = br#"{"event_name":"repository_update","project_id":9,"changes":[""#.to_vec();
    body.extend(std::iter::repeat_n(b'x', 1_000_000));
    body.extend(br#""]}"#);
    let answer = hooks.post(body, &[token(SECRET)]).await;
    assert_eq!(answer.status, 400);
    assert!(answer.body["message"].as_str().unwrap().len() < 1100);
    let kind = format!(r#"{{"object_kind":"{}"}}"#, "k".repeat(100_000));
    assert_eq!(
        hooks.post(kind.into_bytes(), &[token(SECRET)]).await.status,
        202
    );
    let lines = captured.lines();
    assert!(
        lines.iter().any(|l| l.contains("hook refused")),
        "{lines:?}"
    );
    assert!(
        longest(&lines) < MAX_LINE,
        "a line of {} bytes",
        longest(&lines)
    );
}

#[tokio::test(flavor = "current_thread")]
async fn refusals_are_logged_once_per_source_and_reason_per_interval() {
    let (captured, _guard) = capture();
    let hooks = Hooks::start(Setup {
        log_interval: Duration::from_millis(300),
        ..Setup::default()
    })
    .await;
    let refused_lines = || {
        captured
            .lines()
            .into_iter()
            .filter(|l| l.contains("hook refused"))
            .collect::<Vec<_>>()
    };
    for _ in 0..50 {
        let answer = hooks
            .post(
                push("refs/heads/main", 1),
                &[token("wrong-token-wrong-token")],
            )
            .await;
        assert_eq!(answer.status, 401);
    }
    assert_eq!(refused_lines().len(), 1, "{:?}", refused_lines());
    // Another source and another reason each get their line.
    hooks
        .post_from(
            [10, 0, 0, 2],
            push("refs/heads/main", 1),
            &[token("wrong-token-wrong-token")],
        )
        .await;
    hooks.post(push("refs/heads/main", 1), &[]).await;
    let lines = refused_lines();
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(lines[1].contains("source=10.0.0.2"), "{}", lines[1]);
    assert!(
        lines[2].contains("reason=\"token_missing\"") || lines[2].contains("reason=token_missing"),
        "{}",
        lines[2]
    );

    // After the interval, the next line counts the suppressed ones.
    tokio::time::sleep(Duration::from_millis(350)).await;
    hooks
        .post(
            push("refs/heads/main", 1),
            &[token("wrong-token-wrong-token")],
        )
        .await;
    let lines = refused_lines();
    assert_eq!(lines.len(), 4, "{lines:?}");
    assert!(lines[3].contains("suppressed=49"), "{}", lines[3]);
}
