//! What a hook leaves behind for whoever follows it: the `hook` span with the request id,
//! the idempotency key, the kind and the seqs, around every line the hook logs; and the
//! metrics it counts, every one of them described.
//!
//! A binary of its own, its tests one at a time, each under its own subscriber or
//! recorder: tracing caches per call site whether anyone listens, and a test without a
//! subscriber running beside one with it can leave that cache saying no.

#[allow(dead_code)]
#[path = "http/support.rs"]
mod support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use fluxgate_ingest::metric_names;
use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt as _};
use tracing_subscriber::registry::LookupSpan;

use crate::support::{
    Hooks, SECRET, SIGNING_KEY, Setup, now_seconds, push, repository_update, signed, token,
};

/// The fields of one span or event, as text.
type Fields = BTreeMap<String, String>;

#[derive(Default)]
struct FieldText(Fields);

impl Visit for FieldText {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
}

/// An event logged inside a `hook` span: its message, and the span's fields at that
/// moment.
#[derive(Debug, Clone)]
struct EventInHook {
    message: String,
    hook: Fields,
}

/// Captures the fields of every `hook` span (final, at close) and every event logged in
/// one.
#[derive(Clone, Default)]
struct HookSpans {
    open: Arc<Mutex<HashMap<Id, Fields>>>,
    closed: Arc<Mutex<Vec<Fields>>>,
    events: Arc<Mutex<Vec<EventInHook>>>,
}

impl HookSpans {
    fn closed(&self) -> Vec<Fields> {
        self.closed.lock().clone()
    }

    fn events(&self) -> Vec<EventInHook> {
        self.events.lock().clone()
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for HookSpans {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, _ctx: Context<'_, S>) {
        if attrs.metadata().name() == "hook" {
            let mut fields = FieldText::default();
            attrs.record(&mut fields);
            self.open.lock().insert(id.clone(), fields.0);
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, _ctx: Context<'_, S>) {
        if let Some(fields) = self.open.lock().get_mut(id) {
            let mut recorded = FieldText::default();
            values.record(&mut recorded);
            fields.extend(recorded.0);
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.event_span(event) else {
            return;
        };
        let Some(hook) = span
            .scope()
            .find_map(|s| self.open.lock().get(&s.id()).cloned())
        else {
            return;
        };
        let mut fields = FieldText::default();
        event.record(&mut fields);
        let message = fields.0.remove("message").unwrap_or_default();
        self.events.lock().push(EventInHook { message, hook });
    }

    fn on_close(&self, id: Id, _ctx: Context<'_, S>) {
        if let Some(fields) = self.open.lock().remove(&id) {
            self.closed.lock().push(fields);
        }
    }
}

/// Runs the tests of this binary one at a time.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn capture_spans() -> (HookSpans, tracing::subscriber::DefaultGuard) {
    let spans = HookSpans::default();
    let subscriber = tracing_subscriber::registry()
        .with(spans.clone())
        .with(tracing_subscriber::filter::LevelFilter::DEBUG);
    (spans.clone(), tracing::subscriber::set_default(subscriber))
}

fn fields(pairs: &[(&str, &str)]) -> Fields {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// The answer's seqs as the span lists them: `4,5,6`.
fn seqs_text(answer: &serde_json::Value) -> String {
    let seqs: Vec<String> = answer["seqs"]
        .as_array()
        .expect("seqs")
        .iter()
        .map(ToString::to_string)
        .collect();
    seqs.join(",")
}

fn request_id(id: &str) -> (&'static str, String) {
    ("x-request-id", id.to_owned())
}

fn idempotency_key(key: &str) -> (&'static str, String) {
    ("idempotency-key", key.to_owned())
}

#[tokio::test(flavor = "current_thread")]
async fn a_committed_hook_s_span_names_its_request_key_kind_and_seqs() {
    let _one = ONE_AT_A_TIME.lock().await;
    let (spans, _guard) = capture_spans();
    let hooks = Hooks::start(Setup::default()).await;
    let first = hooks
        .post(
            push("refs/heads/main", 1),
            &[
                token(SECRET),
                request_id("req-push-1"),
                idempotency_key("delivery-1"),
            ],
        )
        .await;
    assert_eq!(first.status, 200, "{}", first.body);
    let second = hooks
        .post(
            repository_update(3),
            &[token(SECRET), request_id("req-update-2")],
        )
        .await;
    assert_eq!(second.status, 200, "{}", second.body);

    let push_span = fields(&[
        ("request_id", "req-push-1"),
        ("idempotency_key", "delivery-1"),
        ("kind", "push"),
        ("seqs", &seqs_text(&first.body)),
    ]);
    let update_span = fields(&[
        ("request_id", "req-update-2"),
        ("kind", "repository_update"),
        ("seqs", &seqs_text(&second.body)),
    ]);
    assert_eq!(second.body["seqs"].as_array().map(Vec::len), Some(3));
    assert_eq!(spans.closed(), vec![push_span.clone(), update_span.clone()]);
    // The summary line is logged inside the span, after the seqs were recorded, so a
    // grep of the request id or a seq finds it.
    let committed: Vec<Fields> = spans
        .events()
        .into_iter()
        .filter(|e| e.message == "hook committed")
        .map(|e| e.hook)
        .collect();
    assert_eq!(committed, vec![push_span, update_span]);
}

#[tokio::test(flavor = "current_thread")]
async fn a_signed_hook_s_span_carries_its_webhook_id() {
    let _one = ONE_AT_A_TIME.lock().await;
    let (spans, _guard) = capture_spans();
    let hooks = Hooks::start(Setup {
        signing: true,
        ..Setup::default()
    })
    .await;
    let body = push("refs/heads/main", 1);
    let mut headers = signed(&SIGNING_KEY, "msg_span", now_seconds(), &body);
    // The signed webhook-id, not the unsigned header, is the hook's key.
    headers.push(idempotency_key("unsigned-key"));
    headers.push(request_id("req-signed"));
    let answer = hooks.post(body, &headers).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(
        spans.closed(),
        vec![fields(&[
            ("request_id", "req-signed"),
            ("idempotency_key", "msg_span"),
            ("kind", "push"),
            ("seqs", &seqs_text(&answer.body)),
        ])]
    );
}

#[tokio::test(flavor = "current_thread")]
async fn ignored_and_refused_hooks_are_logged_in_their_span() {
    let _one = ONE_AT_A_TIME.lock().await;
    let (spans, _guard) = capture_spans();
    let hooks = Hooks::start(Setup::default()).await;
    let merge_request = br#"{"object_kind": "merge_request"}"#.to_vec();
    let answer = hooks
        .post(merge_request, &[token(SECRET), request_id("req-mr")])
        .await;
    assert_eq!(answer.status, 202);
    let answer = hooks
        .post(
            push("refs/heads/main", 1),
            &[token("wrong-token-wrong-token"), request_id("req-refused")],
        )
        .await;
    assert_eq!(answer.status, 401);

    let events = spans.events();
    let ignored = events
        .iter()
        .find(|e| e.message == "hook of an unused kind ignored")
        .unwrap_or_else(|| panic!("an ignored line in {events:?}"));
    assert_eq!(
        ignored.hook,
        fields(&[("request_id", "req-mr"), ("kind", "merge_request")])
    );
    let refused = events
        .iter()
        .find(|e| e.message == "hook refused")
        .expect("a refused line");
    assert_eq!(refused.hook, fields(&[("request_id", "req-refused")]));
}

/// Counts what the handler counts, and remembers every description.
#[derive(Default)]
struct CountingRecorder {
    counters: Mutex<BTreeMap<String, Arc<AtomicU64>>>,
    histograms: Mutex<BTreeSet<String>>,
    described: Mutex<BTreeSet<String>>,
}

impl CountingRecorder {
    fn counts(&self) -> BTreeMap<String, u64> {
        self.counters
            .lock()
            .iter()
            .map(|(key, count)| (key.clone(), count.load(Ordering::Relaxed)))
            .collect()
    }

    /// Every metric name of a hook's that was used (the store's appender counts its own).
    fn used_by_hooks(&self) -> BTreeSet<String> {
        let counters = self.counters.lock();
        let counters = counters
            .keys()
            .map(|key| key.split('{').next().unwrap_or(key).to_owned());
        counters
            .chain(self.histograms.lock().iter().cloned())
            .filter(|name| !name.starts_with("fluxgate_store_"))
            .collect()
    }

    fn describe(&self, key: KeyName) {
        self.described.lock().insert(key.as_str().to_owned());
    }
}

/// `name{key=value,…}`, labels in the order given.
fn key_text(key: &Key) -> String {
    let labels: Vec<String> = key
        .labels()
        .map(|label| format!("{}={}", label.key(), label.value()))
        .collect();
    format!("{}{{{}}}", key.name(), labels.join(","))
}

impl Recorder for CountingRecorder {
    fn describe_counter(&self, key: KeyName, _unit: Option<Unit>, _description: SharedString) {
        self.describe(key);
    }

    fn describe_gauge(&self, key: KeyName, _unit: Option<Unit>, _description: SharedString) {
        self.describe(key);
    }

    fn describe_histogram(&self, key: KeyName, _unit: Option<Unit>, _description: SharedString) {
        self.describe(key);
    }

    fn register_counter(&self, key: &Key, _metadata: &Metadata<'_>) -> Counter {
        let count = self
            .counters
            .lock()
            .entry(key_text(key))
            .or_default()
            .clone();
        Counter::from_arc(count)
    }

    fn register_gauge(&self, _key: &Key, _metadata: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }

    fn register_histogram(&self, key: &Key, _metadata: &Metadata<'_>) -> Histogram {
        self.histograms.lock().insert(key.name().to_owned());
        Histogram::noop()
    }
}

#[tokio::test(flavor = "current_thread")]
async fn every_outcome_is_counted_under_a_described_name_with_plain_labels() {
    let _one = ONE_AT_A_TIME.lock().await;
    let recorder = CountingRecorder::default();
    let _local = metrics::set_default_local_recorder(&recorder);
    let hooks = Hooks::start(Setup::default()).await;
    let ok = |answer: crate::support::Answer, status: u16| {
        assert_eq!(answer.status, status, "{}", answer.body);
    };
    let keyed = [token(SECRET), idempotency_key("same-delivery")];
    ok(hooks.post(push("refs/tags/v1", 1), &keyed).await, 200);
    ok(hooks.post(push("refs/tags/v1", 1), &keyed).await, 200);
    ok(
        hooks.post(repository_update(2), &[token(SECRET)]).await,
        200,
    );
    let merge_request = br#"{"object_kind": "merge_request"}"#.to_vec();
    ok(hooks.post(merge_request, &[token(SECRET)]).await, 202);
    let unlisted = br#"{"object_kind": "something_new"}"#.to_vec();
    ok(hooks.post(unlisted, &[token(SECRET)]).await, 202);
    ok(hooks.post(push("refs/heads/main", 2), &[]).await, 401);
    ok(hooks.post(b"[]".to_vec(), &[token(SECRET)]).await, 400);

    let expected: BTreeMap<String, u64> = [
        ("fluxgate_hooks_total{outcome=accepted}", 2),
        ("fluxgate_hooks_total{outcome=duplicate}", 1),
        ("fluxgate_hooks_total{outcome=ignored}", 2),
        ("fluxgate_hooks_total{outcome=unauthenticated}", 1),
        ("fluxgate_hooks_total{outcome=bad_request}", 1),
        ("fluxgate_hook_records_total{kind=tag_push}", 2),
        ("fluxgate_hook_records_total{kind=push}", 2),
        ("fluxgate_hooks_ignored_total{kind=merge_request}", 1),
        ("fluxgate_hooks_ignored_total{kind=other}", 1),
        ("fluxgate_hook_refusals_total{reason=token_missing}", 1),
        ("fluxgate_hook_refusals_total{reason=payload_invalid}", 1),
    ]
    .into_iter()
    .map(|(key, count)| (key.to_owned(), count))
    .collect();
    assert_eq!(recorder.counts(), expected);

    metric_names::describe();
    let described = recorder.described.lock().clone();
    let all: BTreeSet<String> = metric_names::ALL.iter().map(|n| (*n).to_owned()).collect();
    assert_eq!(described, all, "describe() describes exactly ALL");
    let used = recorder.used_by_hooks();
    assert!(used.is_subset(&all), "used {used:?}, described {all:?}");
    assert!(used.contains(metric_names::HOOK_SECONDS), "{used:?}");
}
