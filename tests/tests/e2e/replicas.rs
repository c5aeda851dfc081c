//! Several replicas on one PostgreSQL database and one Redis: any replica takes any hook
//! and serves any agent, and losing a replica, Redis or the database costs latency at
//! most, never an event.
//!
//! Each test has its own PostgreSQL database. Tests that do not break Redis share the one
//! on 127.0.0.1:6379 under their own key prefix; the others run their own `redis-server`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fluxgate_e2e::flux_receiver::{FluxReceiverStandIn, Receiver, ReceiverType};
use fluxgate_e2e::harness::payloads::{push, sha};
use fluxgate_e2e::harness::{
    AgentProcess, Broker, BrokerOptions, ChaosProxy, PATIENCE, Project, RawStream, ReceiverConfig,
    RedisServer, eventually, http_client,
};
use fluxgate_store::testing::TestDatabase;
use tokio::sync::{Mutex, Notify};

const SHARED_REDIS: &str = "redis://127.0.0.1:6379";

/// Two replicas on a fresh database. `None` if PostgreSQL tests are skipped.
struct Cluster {
    a: Broker,
    b: Broker,
    database: TestDatabase,
    _dirs: tempfile::TempDir,
}

async fn cluster(redis_url: &str, extra: &[&str]) -> Cluster {
    let database = TestDatabase::postgres().await;
    let dirs = tempfile::tempdir().unwrap();
    let prefix = format!("e2e-{}", uuid::Uuid::new_v4().simple());
    let replica = |name: &str| {
        let mut options =
            BrokerOptions::replica(dirs.path().join(name), database.url(), redis_url, &prefix);
        options.extra_args = extra.iter().map(|s| (*s).to_owned()).collect();
        options
            .extra_args
            .extend(["--broker-id".to_owned(), format!("replica-{name}")]);
        options
    };
    let a = Broker::start(replica("a")).await;
    let b = Broker::start(replica("b")).await;
    Cluster {
        a,
        b,
        database,
        _dirs: dirs,
    }
}

async fn post(broker: &Broker, project: &Project, git_ref: &str, n: u64) -> u64 {
    let response = broker
        .post_hook(&push(project, git_ref, &sha(n), &sha(n + 1)), &[])
        .await;
    assert_eq!(response.status, 200, "{:?}", response.body);
    response.seqs()[0]
}

#[tokio::test]
async fn a_hook_to_one_replica_reaches_an_agent_on_the_other_through_redis() {
    // The database poll is slowed down, so a prompt delivery can only have come via Redis.
    let cluster = cluster(SHARED_REDIS, &["--poll-interval", "30s"]).await;
    let token = cluster.a.create_agent("edge", "team/app", &[]).await;
    let mut stream = RawStream::open(&cluster.b.agent_url(), &token, &[("team/app", "")], None)
        .await
        .unwrap();

    let app = Project::private(1, "team/app");
    eventually(PATIENCE, "replica b to follow redis", || async {
        let report: serde_json::Value = http_client()
            .get(format!("http://{}/readyz", cluster.b.metrics))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (report["redis"] == true).then_some(())
    })
    .await;
    let sent = Instant::now();
    let seq = post(&cluster.a, &app, "refs/heads/main", 0).await;
    let event = stream
        .next_event(Duration::from_secs(5))
        .await
        .unwrap()
        .expect("delivered across replicas");
    assert_eq!(event.seq, seq);
    assert!(sent.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn an_agent_moving_to_another_replica_resumes_from_its_cursor() {
    let cluster = cluster(SHARED_REDIS, &[]).await;
    let token = cluster.a.create_agent("mover", "team/app", &[]).await;
    let app = Project::private(1, "team/app");
    let mut expected = Vec::new();
    for n in 0..10 {
        let replica = if n % 2 == 0 { &cluster.a } else { &cluster.b };
        expected.push(post(replica, &app, &format!("refs/heads/b{n}"), n).await);
    }

    let mut on_a = RawStream::open(&cluster.a.agent_url(), &token, &[("team/app", "")], None)
        .await
        .unwrap();
    let mut seen = Vec::new();
    for _ in 0..6 {
        let event = on_a.next_event(PATIENCE).await.unwrap().unwrap();
        on_a.ack(event.seq).await;
        seen.push(event.seq);
    }
    // Acked on A, stored, honoured by B: the agent sends no resume point of its own.
    cluster.b.wait_for_cursor("mover", seen[5]).await;
    drop(on_a);
    for n in 10..14 {
        expected.push(post(&cluster.a, &app, &format!("refs/heads/b{n}"), n).await);
    }

    let mut on_b = RawStream::open(&cluster.b.agent_url(), &token, &[("team/app", "")], None)
        .await
        .unwrap();
    assert_eq!(on_b.welcome.resume_after, seen[5]);
    while seen.len() < expected.len() {
        let event = on_b
            .next_event(PATIENCE)
            .await
            .unwrap()
            .expect("the rest, from B");
        seen.push(event.seq);
    }
    assert_eq!(seen, expected, "nothing lost, nothing repeated, in order");
}

#[tokio::test]
async fn concurrent_ingest_on_both_replicas_gives_unique_gapless_ordered_seqs() {
    let cluster = cluster(SHARED_REDIS, &[]).await;
    let token = cluster
        .a
        .create_agent("watcher", "team/cfg", &["--grant-group", "team"])
        .await;
    let subs = [("team/app", "")];
    let mut on_a = RawStream::open(&cluster.a.agent_url(), &token, &subs, None)
        .await
        .unwrap();
    let mut on_b = RawStream::open(&cluster.b.agent_url(), &token, &subs, None)
        .await
        .unwrap();

    // Both replicas take 100 pushes each, at the same time.
    let app = Project::private(1, "team/app");
    let writers = [
        tokio::spawn(cluster.a.hooks().push_branches(app.clone(), 0..100)),
        tokio::spawn(cluster.b.hooks().push_branches(app.clone(), 100..200)),
    ];
    let mut pushed = BTreeSet::new();
    for writer in writers {
        for seq in writer.await.unwrap() {
            assert!(pushed.insert(seq), "seq {seq} was given twice");
        }
    }

    // The log itself is gapless.
    let pool = sqlx::PgPool::connect(cluster.database.url()).await.unwrap();
    let seqs: Vec<i64> = sqlx::query_scalar("SELECT seq FROM log_entries ORDER BY seq")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(seqs, (1..=seqs.len() as i64).collect::<Vec<_>>(), "gapless");
    let head: i64 = sqlx::query_scalar("SELECT head_seq FROM log_state")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(head, seqs.len() as i64);

    // Each stream sees every push, in seq order.
    let expected: Vec<u64> = pushed.into_iter().collect();
    for stream in [&mut on_a, &mut on_b] {
        let mut seen = Vec::new();
        while seen.len() < expected.len() {
            seen.push(
                stream
                    .next_event(PATIENCE)
                    .await
                    .unwrap()
                    .expect("every push")
                    .seq,
            );
        }
        assert_eq!(seen, expected);
    }
}

#[tokio::test]
async fn a_redis_outage_costs_latency_not_events() {
    /// Hooks acknowledged in each phase (before, during and after the outage).
    const PER_PHASE: usize = 5;
    let mut redis = RedisServer::start().await;
    let cluster = cluster(&redis.url(), &["--poll-interval", "2s"]).await;
    let token = cluster.a.create_agent("patient", "team/app", &[]).await;
    let mut stream = RawStream::open(&cluster.b.agent_url(), &token, &[("team/app", "")], None)
        .await
        .unwrap();
    let app = Project::private(1, "team/app");

    // Hooks keep coming to A while Redis goes away and comes back; `progress` counts the
    // acknowledged ones, so each phase lasts until enough hooks went through it.
    let stop = Arc::new(Notify::new());
    let (progress, acknowledged_count) = tokio::sync::watch::channel(0_usize);
    let writer = {
        let (hooks, app, stop) = (cluster.a.hooks(), app.clone(), stop.clone());
        tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            let mut pace = tokio::time::interval(Duration::from_millis(50));
            for n in 0.. {
                let body = push(&app, &format!("refs/heads/b{n}"), &sha(0), &sha(n + 1));
                if let Ok(response) = hooks.post(&body, &[]).await
                    && response.status == 200
                {
                    acknowledged.extend(response.seqs());
                    progress.send_replace(acknowledged.len());
                }
                tokio::select! {
                    () = stop.notified() => return acknowledged,
                    _ = pace.tick() => {}
                }
            }
            acknowledged
        })
    };
    let hooks_acknowledged = |at_least: usize| {
        let mut count = acknowledged_count.clone();
        async move {
            tokio::time::timeout(PATIENCE, count.wait_for(|n| *n >= at_least))
                .await
                .unwrap_or_else(|_| panic!("fewer than {at_least} hooks acknowledged in time"))
                .expect("the writer runs until told to stop");
        }
    };
    hooks_acknowledged(PER_PHASE).await;

    redis.stop().await;
    let (ready, _) = readyz(&cluster.a).await;
    assert!(ready, "a replica without Redis is still ready");
    eventually(
        PATIENCE,
        "both replicas to notice redis is gone",
        || async {
            let (a_ready, a) = readyz(&cluster.a).await;
            let (_, b) = readyz(&cluster.b).await;
            (a_ready && a["redis"] == false && b["redis"] == false).then_some(())
        },
    )
    .await;
    let during_outage = *acknowledged_count.borrow() + PER_PHASE;
    hooks_acknowledged(during_outage).await;

    redis.resume().await;
    eventually(PATIENCE, "both replicas to reconnect to redis", || async {
        let (_, a) = readyz(&cluster.a).await;
        let (_, b) = readyz(&cluster.b).await;
        (a["redis"] == true && b["redis"] == true).then_some(())
    })
    .await;
    let after_outage = *acknowledged_count.borrow() + PER_PHASE;
    hooks_acknowledged(after_outage).await;
    stop.notify_one();
    let acknowledged = writer.await.unwrap();

    let mut seen = BTreeSet::new();
    while !acknowledged.iter().all(|seq| seen.contains(seq)) {
        let event = stream
            .next_event(PATIENCE)
            .await
            .unwrap()
            .expect("every acknowledged hook is delivered");
        seen.insert(event.seq);
    }
    // Latency is back to normal: well under the 2 s database poll.
    let sent = Instant::now();
    let seq = post(&cluster.a, &app, "refs/heads/after", 99).await;
    let event = stream
        .next_event(Duration::from_secs(5))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(event.seq, seq);
    let latency = sent.elapsed();
    assert!(
        latency < Duration::from_millis(1500),
        "delivery took {latency:?} after Redis came back"
    );
}

async fn readyz(broker: &Broker) -> (bool, serde_json::Value) {
    let response = http_client()
        .get(format!("http://{}/readyz", broker.metrics))
        .send()
        .await
        .expect("the metrics listener answers");
    let ready = response.status().is_success();
    (ready, response.json().await.unwrap_or_default())
}

#[tokio::test]
async fn a_replica_killed_with_sigkill_loses_nothing_it_acknowledged() {
    const REFS: u64 = 40;
    let receivers = ["one", "two"].iter().flat_map(|agent| {
        (0..REFS).map(move |n| {
            Receiver::new(&format!("{agent}-r{n}"), ReceiverType::GenericHmac, "token")
        })
    });
    let flux = FluxReceiverStandIn::start(receivers).await;
    let mut cluster = cluster(SHARED_REDIS, &[]).await;
    let a_url = cluster.a.agent_url();
    let b_url = cluster.b.agent_url();
    let mut agents = Vec::new();
    for agent in ["one", "two"] {
        let token = cluster
            .b
            .create_agent(agent, &format!("{agent}/cfg"), &["--grant-group", "team"])
            .await;
        let configs = ReceiverConfig::one_per_branch(
            &format!("{agent}-"),
            "team/app",
            REFS,
            &flux.base_url(),
        );
        // Both agents start on A, and know B.
        let mut process =
            AgentProcess::start_with_brokers(&[&a_url, &b_url], &token, &configs).await;
        process
            .process()
            .wait_for_log("connected to the broker", PATIENCE)
            .await;
        agents.push(process);
    }

    // A steady stream of hooks, alternating between the replicas; A dies in the middle.
    let app = Project::private(1, "team/app");
    let replicas = [cluster.a.hooks(), cluster.b.hooks()];
    let acknowledged: Arc<Mutex<BTreeMap<u64, u64>>> = Arc::default();
    let halfway = Arc::new(Notify::new());
    let writer = {
        let (acknowledged, halfway, app) = (acknowledged.clone(), halfway.clone(), app.clone());
        tokio::spawn(async move {
            for n in 0..REFS {
                let body = push(&app, &format!("refs/heads/b{n}"), &sha(0), &sha(n + 1));
                if let Ok(response) = replicas[(n % 2) as usize].post(&body, &[]).await
                    && response.status == 200
                {
                    acknowledged.lock().await.insert(n, n + 1);
                }
                if n == REFS / 2 {
                    halfway.notify_one();
                }
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
        })
    };
    halfway.notified().await;
    cluster.a.kill().await;
    writer.await.unwrap();
    let acknowledged = acknowledged.lock().await.clone();
    assert!(
        acknowledged.len() < REFS as usize,
        "hooks to the dead replica must have failed"
    );
    assert!(
        acknowledged.len() > REFS as usize / 2,
        "hooks to the live replica kept working"
    );

    let mut delivered = 0;
    for agent in ["one", "two"] {
        for (n, after) in &acknowledged {
            let hits = flux
                .wait_for_hits(&format!("{agent}-r{n}"), 1, PATIENCE)
                .await;
            assert_eq!(hits[0].json()["after"], sha(*after), "{agent} ref b{n}");
            delivered += 1;
        }
    }
    assert_eq!(
        delivered,
        2 * acknowledged.len(),
        "every acknowledged hook reached both agents"
    );
    drop(agents);
}

#[tokio::test]
async fn a_database_outage_gives_quick_503s_and_recovers_by_itself() {
    let database = TestDatabase::postgres().await;
    let url = url::Url::parse(database.url()).unwrap();
    let upstream = format!("{}:{}", url.host_str().unwrap(), url.port().unwrap_or(5432))
        .parse()
        .unwrap();
    let proxy = ChaosProxy::start(upstream).await;
    let mut through_proxy = url.clone();
    through_proxy
        .set_port(Some(proxy.address().port()))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut options = BrokerOptions::embedded(dir.path());
    options.database_url = Some(through_proxy.to_string());
    options.extra_args = vec!["--commit-timeout".into(), "3s".into()];
    let broker = Broker::start(options).await;
    let app = Project::private(1, "team/app");
    let first = post(&broker, &app, "refs/heads/main", 0).await;

    proxy.cut();
    let started = Instant::now();
    let refused = broker
        .post_hook(&push(&app, "refs/heads/main", &sha(1), &sha(2)), &[])
        .await;
    assert_eq!(refused.status, 503, "{:?}", refused.body);
    assert_eq!(refused.body["code"], "unavailable");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "answered in {:?}",
        started.elapsed()
    );
    eventually(PATIENCE, "/readyz to turn false", || async {
        let (ready, report) = readyz(&broker).await;
        (!ready && report["database"] == false).then_some(())
    })
    .await;

    proxy.restore().await;
    eventually(PATIENCE, "/readyz to turn true again", || async {
        readyz(&broker).await.0.then_some(())
    })
    .await;
    // The refused hook was not stored: sent again, it is new, and the log has no gap.
    let again = broker
        .post_hook(&push(&app, "refs/heads/main", &sha(1), &sha(2)), &[])
        .await;
    assert_eq!(again.status, 200);
    assert_eq!(again.body["status"], "accepted");
    assert_eq!(again.seqs(), vec![first + 1]);
}

#[tokio::test]
async fn presence_follows_an_agent_across_a_graceful_replica_shutdown() {
    let flux =
        FluxReceiverStandIn::start([Receiver::new("app", ReceiverType::GenericHmac, "token")])
            .await;
    let mut cluster = cluster(SHARED_REDIS, &[]).await;
    let token = cluster.a.create_agent("roamer", "team/app", &[]).await;
    let configs = [ReceiverConfig::flux(
        "app",
        "team/app",
        "generic-hmac",
        "token",
        &flux.base_url(),
    )];
    let (a_url, b_url) = (cluster.a.agent_url(), cluster.b.agent_url());
    let mut agent = AgentProcess::start_with_brokers(&[&a_url, &b_url], &token, &configs).await;

    // Any replica (here the CLI with B's settings) sees the stream on A.
    let b = &cluster.b;
    let on = |replica: &'static str| {
        move || async move {
            let shown: serde_json::Value =
                serde_json::from_str(&b.cli(&["agent", "show", "--json", "roamer"]).await).ok()?;
            let replicas: Vec<&str> = shown["connections"]
                .as_array()?
                .iter()
                .filter_map(|c| c["replica"].as_str())
                .collect();
            (shown["connected"] == true && replicas == [replica]).then_some(())
        }
    };
    eventually(
        PATIENCE,
        "presence to show the agent on replica a",
        on("replica-a"),
    )
    .await;

    // A drains: its stream closes with UNAVAILABLE and the agent moves to B.
    assert!(cluster.a.terminate().await, "replica a stops cleanly");
    eventually(
        PATIENCE,
        "presence to show the agent on replica b",
        on("replica-b"),
    )
    .await;
    let app = Project::private(1, "team/app");
    let seq = post(b, &app, "refs/heads/main", 0).await;
    let hits = flux.wait_for_hits("app", 1, PATIENCE).await;
    assert_eq!(hits[0].json()["seq"], seq);
    let logs = agent.process().lines();
    assert!(
        logs.iter()
            .any(|line| line.contains("disconnected from the broker")
                && line.contains("shutting down")),
        "the agent was told the replica was shutting down"
    );
}

/// A database that answers but refuses writes (a standby after a failover, or
/// `default_transaction_read_only`) is an outage, not a bug: hooks get the documented JSON
/// 503 (never a 500) and the replica is not ready until writes succeed again.
#[tokio::test]
async fn a_database_that_refuses_writes_gives_json_503s_and_not_ready_until_it_accepts_them() {
    let database = TestDatabase::postgres().await;
    let name = database.postgres_name().unwrap().to_owned();
    let dir = tempfile::tempdir().unwrap();
    let mut options = BrokerOptions::embedded(dir.path());
    options.database_url = Some(database.url().to_owned());
    let broker = Broker::start(options).await;
    let app = Project::private(1, "team/app");
    post(&broker, &app, "refs/heads/main", 0).await;
    let client = http_client();
    let readyz = format!("http://{}/readyz", broker.metrics);
    let ready = || async {
        let response = client.get(&readyz).send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json::<serde_json::Value>().await.unwrap())
    };
    // Every connection the broker opens from now on is read-only.
    let reconnect =
        format!("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'");
    database
        .execute_as_admin(&format!(
            "ALTER DATABASE {name} SET default_transaction_read_only = on"
        ))
        .await;
    database.execute_as_admin(&reconnect).await;

    eventually(PATIENCE, "the broker to report not ready", || async {
        let (status, body) = ready().await;
        (status == 503 && body["database"] == false).then_some(())
    })
    .await;
    for n in 1..=5 {
        let refused = broker
            .post_hook(&push(&app, "refs/heads/main", &sha(n), &sha(n + 1)), &[])
            .await;
        assert_eq!(refused.status, 503, "hook {n}: {:?}", refused.body);
        assert_eq!(refused.body["code"], "unavailable", "{:?}", refused.body);
    }

    database
        .execute_as_admin(&format!(
            "ALTER DATABASE {name} RESET default_transaction_read_only"
        ))
        .await;
    database.execute_as_admin(&reconnect).await;
    eventually(PATIENCE, "the broker to be ready again", || async {
        (ready().await.0 == 200).then_some(())
    })
    .await;
    eventually(PATIENCE, "a hook to be accepted again", || async {
        let response = broker
            .post_hook(&push(&app, "refs/heads/main", &sha(1), &sha(2)), &[])
            .await;
        (response.status == 200).then_some(())
    })
    .await;
}
