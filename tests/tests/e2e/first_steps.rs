//! What a new user trips over, each answered with what is wrong and how to fix it: CLI
//! commands that would silently create a store, CLI errors and output, an agent pointed at
//! the wrong port or given an address without a scheme.

use std::process::Output;

use fluxgate_e2e::harness::binaries::binary;
use fluxgate_e2e::harness::{AgentProcess, Broker, BrokerOptions, PATIENCE, ReceiverConfig};
use tokio::process::Command;

/// Runs `fluxgate <args…>` in `cwd` and returns what it did, success or not.
async fn fluxgate(cwd: &std::path::Path, args: &[&str]) -> Output {
    Command::new(binary("fluxgate"))
        .current_dir(cwd)
        .args(args)
        .env_remove("FLUXGATE_DATA_DIR")
        .env_remove("FLUXGATE_DATABASE_URL")
        .env_remove("FLUXGATE_CONFIG")
        .env_remove("RUST_LOG")
        // What a user sees: without a backtrace (this shell may have asked for one).
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE")
        .output()
        .await
        .expect("run the fluxgate CLI")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test]
async fn cli_commands_open_an_existing_store_only() {
    let dir = tempfile::tempdir().unwrap();
    // Outside any data directory: nothing is created, and the error says how to fix it.
    let listed = fluxgate(dir.path(), &["agent", "list"]).await;
    assert!(!listed.status.success());
    let message = stderr(&listed);
    let default_db = dir.path().join("fluxgate-data").join("fluxgate.db");
    assert!(
        message.contains(&format!("no fluxgate database at {}", default_db.display())),
        "{message}"
    );
    assert!(message.contains("fluxgate migrate"), "{message}");
    assert!(message.contains("--data-dir"), "{message}");
    assert!(
        !dir.path().join("fluxgate-data").exists(),
        "the CLI created a data directory"
    );

    // A mistyped --data-dir next to a real one: no token is printed for a store no broker
    // reads.
    let real = dir.path().join("data");
    let migrated = fluxgate(
        dir.path(),
        &["--data-dir", real.to_str().unwrap(), "migrate"],
    )
    .await;
    assert!(migrated.status.success(), "{}", stderr(&migrated));
    let typo = dir.path().join("dta");
    let created = fluxgate(
        dir.path(),
        &[
            "--data-dir",
            typo.to_str().unwrap(),
            "agent",
            "create",
            "--name",
            "edge",
            "--config-project",
            "ops/edge",
        ],
    )
    .await;
    assert!(!created.status.success());
    assert!(!stdout(&created).contains("fgat_"), "a token was printed");
    assert!(
        stderr(&created).contains(&typo.join("fluxgate.db").display().to_string()),
        "{}",
        stderr(&created)
    );
    assert!(!typo.exists());

    // A database file that exists but was never migrated is refused too.
    let bare = dir.path().join("bare");
    std::fs::create_dir(&bare).unwrap();
    std::fs::write(bare.join("fluxgate.db"), b"").unwrap();
    let listed = fluxgate(
        dir.path(),
        &["--data-dir", bare.to_str().unwrap(), "agent", "list"],
    )
    .await;
    assert!(!listed.status.success());
    let message = stderr(&listed);
    assert!(message.contains("is not migrated"), "{message}");
    assert!(message.contains("run `fluxgate migrate`"), "{message}");

    // The real one works.
    let listed = fluxgate(
        dir.path(),
        &["--data-dir", real.to_str().unwrap(), "agent", "list"],
    )
    .await;
    assert!(listed.status.success(), "{}", stderr(&listed));
}

#[tokio::test]
async fn cli_errors_are_one_sentence_and_output_is_clean() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    let cli = |args: Vec<&'static str>| {
        let mut all = vec!["--data-dir", data];
        all.extend(args);
        let cwd = dir.path().to_owned();
        async move { fluxgate(&cwd, &all).await }
    };
    assert!(cli(vec!["migrate"]).await.status.success());

    // `agent create` prints its answer on stdout and nothing else anywhere.
    let created = cli(vec![
        "agent",
        "create",
        "--name",
        "edge",
        "--config-project",
        "ops/edge",
    ])
    .await;
    assert!(created.status.success(), "{}", stderr(&created));
    assert!(
        stdout(&created).starts_with("agent edge created.\n"),
        "{}",
        stdout(&created)
    );
    assert_eq!(stderr(&created), "", "a log line in a CLI command's output");

    let missing = cli(vec!["agent", "show", "nope"]).await;
    assert!(!missing.status.success());
    assert_eq!(stderr(&missing), "Error: no agent named \"nope\"\n");

    let nothing = cli(vec!["agent", "grant", "edge"]).await;
    assert_eq!(
        stderr(&nothing),
        "Error: nothing to grant: give --project, --group or --internal\n"
    );
    let bad_project = cli(vec!["agent", "grant", "edge", "--project", "no spaces/x"]).await;
    assert!(
        stderr(&bad_project).starts_with("Error: --project: "),
        "{}",
        stderr(&bad_project)
    );
    let bad_create = cli(vec![
        "agent",
        "create",
        "--name",
        "x",
        "--config-project",
        "/",
    ])
    .await;
    assert!(
        stderr(&bad_create).starts_with("Error: --config-project: "),
        "{}",
        stderr(&bad_create)
    );

    // Nonsense durations are refused before anything runs.
    let zero = cli(vec!["serve", "--poll-interval", "0s"]).await;
    assert!(!zero.status.success());
    assert!(
        stderr(&zero)
            .contains("invalid poll_interval from flag --poll-interval: must be more than zero"),
        "{}",
        stderr(&zero)
    );
}

#[tokio::test]
async fn an_agent_at_the_http_port_is_told_which_port_to_use() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(BrokerOptions::embedded(dir.path())).await;
    let token = broker.create_agent("lost", "team/cfg", &[]).await;
    let http_port = format!("http://{}", broker.http);
    let receiver = ReceiverConfig::new("r", "team/cfg", "generic", "t", "http://127.0.0.1:9/hook");
    let mut agent = AgentProcess::start(&http_port, &token, &[receiver]).await;
    let line = agent
        .process()
        .wait_for_log(
            "the broker address is not fluxgate's agent (gRPC) port",
            PATIENCE,
        )
        .await;
    let fix = line["fix"].as_str().unwrap_or_default();
    assert!(fix.contains("fluxgate's HTTP port"), "{line}");
    assert!(fix.contains("default 8150"), "{line}");
    assert_eq!(line["level"], "ERROR", "{line}");
}

#[tokio::test]
async fn an_agent_address_without_a_scheme_is_refused_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("agent.yaml");
    std::fs::write(dir.path().join("token"), "fgat_x\n").unwrap();
    std::fs::write(
        &config,
        "broker: 127.0.0.1:8150\ntoken_file: token\nreceivers:\n  - url: http://127.0.0.1:9/hook\n    \
         project: team/cfg\n    type: generic\n",
    )
    .unwrap();
    let output = Command::new(binary("fluxgate-agent"))
        .arg("--config")
        .arg(&config)
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    let message = stderr(&output);
    assert!(
        message.contains("did you mean \"http://127.0.0.1:8150\"?"),
        "{message}"
    );
}
