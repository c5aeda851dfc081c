//! Agents: create, change, delete, look up; cursors.
//!
//! Every change is recorded in the log in the same transaction, with the agent's new
//! policy, so all replicas apply it at the same point of the log.

use fluxgate_core::{
    AdminAction, AgentId, AgentName, AgentPolicy, LogEntry, LogRecord, ReceiverHealth, StateCause,
    StateChange, StateEffect, SubscriptionReport, TokenDigest, UnixMillis,
};
use sqlx::AnyConnection;
use sqlx::any::AnyRow;

use super::compound::{Dialect, ROWS_PER_PART, Single};
use super::log::LogWriter;
use super::rows;
use crate::error::{CorruptValue, ExistingEntity, InvalidRequest, MissingEntity, StoreError};
use crate::model::{AgentRecord, AgentUpdate, CursorUpdate, NewAgent};

/// The agent's columns, and the latest report of its streams that have not closed (from
/// any replica), which says whether it is connected now.
const COLUMNS: &str = "id, name, config_project, grants, allow_internal, token_digest, token_generation, \
                       cursor_seq, created_at, updated_at, last_seen_at, receiver_health, \
                       (SELECT MAX(s.updated_at) FROM agent_stream_cursors s \
                        WHERE s.agent_id = agents.id AND s.closed_at IS NULL) AS open_stream_seen_at, \
                       subscription_status";

fn record_from_row(row: &AnyRow) -> Result<AgentRecord, StoreError> {
    let name = rows::text(row, "name")?;
    let generation = rows::int(row, "token_generation")?;
    Ok(AgentRecord {
        policy: AgentPolicy {
            id: AgentId(rows::int(row, "id")?),
            name: AgentName::parse(&name).map_err(|e| StoreError::corrupt("name", e))?,
            config_project: rows::path(row, "config_project")?,
            grants: rows::json(row, "grants")?,
            allow_internal: rows::int(row, "allow_internal")? != 0,
            token_generation: u32::try_from(generation).map_err(|_| {
                StoreError::corrupt("token_generation", CorruptValue::OutOfRange(generation))
            })?,
        },
        token_digest: TokenDigest::from_hex(rows::text(row, "token_digest")?),
        cursor: rows::seq(row, "cursor_seq")?,
        created_at: rows::millis(row, "created_at")?,
        updated_at: rows::millis(row, "updated_at")?,
        last_seen_at: rows::opt_int(row, "last_seen_at")?.map(UnixMillis),
        receiver_health: rows::opt_json(row, "receiver_health")?,
        open_stream_seen_at: rows::opt_int(row, "open_stream_seen_at")?.map(UnixMillis),
        subscription_status: rows::opt_json(row, "subscription_status")?,
    })
}

pub(super) async fn load_all(conn: &mut AnyConnection) -> Result<Vec<AgentRecord>, StoreError> {
    let query = format!("SELECT {COLUMNS} FROM agents ORDER BY name");
    let found = sqlx::query(sqlx::AssertSqlSafe(query))
        .fetch_all(&mut *conn)
        .await?;
    found.iter().map(record_from_row).collect()
}

pub(super) async fn by_name(
    conn: &mut AnyConnection,
    name: &AgentName,
) -> Result<Option<AgentRecord>, StoreError> {
    let query = format!("SELECT {COLUMNS} FROM agents WHERE name = $1");
    let row = sqlx::query(sqlx::AssertSqlSafe(query))
        .bind(name.as_str())
        .fetch_optional(&mut *conn)
        .await?;
    row.map(|row| record_from_row(&row)).transpose()
}

pub(super) async fn by_token(
    conn: &mut AnyConnection,
    digest: &TokenDigest,
) -> Result<Option<AgentRecord>, StoreError> {
    let query = format!("SELECT {COLUMNS} FROM agents WHERE token_digest = $1");
    let row = sqlx::query(sqlx::AssertSqlSafe(query))
        .bind(digest.as_hex())
        .fetch_optional(&mut *conn)
        .await?;
    row.map(|row| record_from_row(&row)).transpose()
}

async fn require(conn: &mut AnyConnection, name: &AgentName) -> Result<AgentRecord, StoreError> {
    by_name(conn, name)
        .await?
        .ok_or_else(|| StoreError::NotFound(MissingEntity::AgentNamed(name.clone())))
}

/// Writes the state entry for an admin change and closes the log transaction.
async fn record_change(
    conn: &mut AnyConnection,
    mut writer: LogWriter,
    action: AdminAction,
    name: &AgentName,
    effect: StateEffect,
) -> Result<LogEntry, StoreError> {
    let cause = StateCause::Admin {
        action,
        agent: name.clone(),
    };
    let record = LogRecord::State(StateChange {
        cause,
        effects: vec![effect],
    });
    writer.write(record);
    let mut entries = writer.finish(conn).await?;
    Ok(entries.pop().expect("one entry was written"))
}

pub(super) async fn create(
    conn: &mut AnyConnection,
    agent: NewAgent,
    now: UnixMillis,
) -> Result<(AgentRecord, LogEntry), StoreError> {
    let writer = LogWriter::begin(conn, now).await?;
    if by_name(conn, &agent.name).await?.is_some() {
        return Err(StoreError::AlreadyExists(ExistingEntity::AgentNamed(
            agent.name,
        )));
    }
    let head = writer.head();
    let mut grants = agent.grants.clone();
    grants.sort();
    grants.dedup();
    let row = sqlx::query(
        "INSERT INTO agents (name, config_project, grants, allow_internal, token_digest, token_generation, \
         cursor_seq, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, 0, $6, $7, $7) RETURNING id",
    )
    .bind(agent.name.as_str())
    .bind(agent.config_project.as_str())
    .bind(rows::to_json(&grants))
    .bind(i64::from(agent.allow_internal))
    .bind(agent.token_digest.as_hex())
    .bind(rows::seq_param(head))
    .bind(now.get())
    .fetch_one(&mut *conn)
    .await?;
    let id = AgentId(rows::int(&row, "id")?);
    let record = require(conn, &agent.name).await?;
    debug_assert_eq!(record.policy.id, id);
    let effect = StateEffect::Agent {
        policy: record.policy.clone(),
    };
    let entry = record_change(conn, writer, AdminAction::Create, &agent.name, effect).await?;
    Ok((record, entry))
}

pub(super) async fn update(
    conn: &mut AnyConnection,
    name: &AgentName,
    update: AgentUpdate,
    now: UnixMillis,
) -> Result<(AgentRecord, LogEntry), StoreError> {
    let writer = LogWriter::begin(conn, now).await?;
    let current = require(conn, name).await?;
    let mut policy = current.policy.clone();
    let mut digest = current.token_digest.clone();
    let action = match update {
        AgentUpdate::Grant {
            grants,
            allow_internal,
        } => {
            policy.grants.extend(grants);
            policy.allow_internal |= allow_internal;
            AdminAction::Grant
        }
        AgentUpdate::Revoke { grants, internal } => {
            if let Some(missing) = grants.iter().find(|g| !policy.grants.contains(g)) {
                return Err(StoreError::Invalid(InvalidRequest::NoSuchGrant {
                    agent: name.clone(),
                    grant: missing.clone(),
                }));
            }
            policy.grants.retain(|g| !grants.contains(g));
            policy.allow_internal &= !internal;
            AdminAction::Revoke
        }
        AgentUpdate::RotateToken { digest: new_digest } => {
            digest = new_digest;
            policy.token_generation += 1;
            AdminAction::RotateToken
        }
    };
    policy.grants.sort();
    policy.grants.dedup();
    save_policy(conn, &policy, Some(&digest), writer.now()).await?;
    let record = require(conn, name).await?;
    let effect = StateEffect::Agent {
        policy: record.policy.clone(),
    };
    let entry = record_change(conn, writer, action, name, effect).await?;
    Ok((record, entry))
}

pub(super) async fn delete(
    conn: &mut AnyConnection,
    name: &AgentName,
    now: UnixMillis,
) -> Result<LogEntry, StoreError> {
    let writer = LogWriter::begin(conn, now).await?;
    let current = require(conn, name).await?;
    sqlx::query("DELETE FROM agents WHERE id = $1")
        .bind(current.policy.id.0)
        .execute(&mut *conn)
        .await?;
    let effect = StateEffect::AgentRemoved {
        id: current.policy.id,
    };
    record_change(conn, writer, AdminAction::Delete, name, effect).await
}

async fn save_policy(
    conn: &mut AnyConnection,
    policy: &AgentPolicy,
    digest: Option<&TokenDigest>,
    now: UnixMillis,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE agents SET config_project = $1, grants = $2, allow_internal = $3, token_generation = $4, \
         token_digest = COALESCE($5, token_digest), updated_at = $6 WHERE id = $7",
    )
    .bind(policy.config_project.as_str())
    .bind(rows::to_json(&policy.grants))
    .bind(i64::from(policy.allow_internal))
    .bind(i64::from(policy.token_generation))
    .bind(digest.map(|d| d.as_hex().to_owned()))
    .bind(now.get())
    .bind(policy.id.0)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Applies a move rule to every agent's policy, saves those that changed, and returns
/// their new policies as effects.
pub(super) async fn follow_move(
    conn: &mut AnyConnection,
    now: UnixMillis,
    mut rule: impl FnMut(&mut AgentPolicy) -> bool,
) -> Result<Vec<StateEffect>, StoreError> {
    let mut effects = Vec::new();
    for agent in load_all(conn).await? {
        let mut policy = agent.policy;
        if rule(&mut policy) {
            save_policy(conn, &policy, None, now).await?;
            effects.push(StateEffect::Agent { policy });
        }
    }
    Ok(effects)
}

/// Closed streams' holds kept per agent; older ones are released.
pub const MAX_HOLDS_PER_AGENT: usize = 64;

/// Saves stream cursors, releases the holds later streams took over, and sets each agent's
/// cursor to the lowest of its streams' (the contract is on [`crate::Store::save_cursors`]).
/// A fixed number of statements per chunk of updates, then per chunk of the agents they
/// belong to: an agent's streams are looked at once per save, however many of them moved.
pub(super) async fn save_cursors(
    conn: &mut AnyConnection,
    updates: &[CursorUpdate],
    stale_before: UnixMillis,
) -> Result<(), StoreError> {
    let dialect = Dialect::of(conn);
    for chunk in updates.chunks(ROWS_PER_PART) {
        Single::new(dialect, |part| {
            part.sql(
                "INSERT INTO agent_stream_cursors \
                 (agent_id, stream_id, subscriptions, started_seq, cursor_seq, opened_at, \
                 updated_at, closed_at) VALUES ",
            )
            .rows(chunk, |row, update| {
                row.bind(update.agent.0)
                    .bind(update.stream.as_str())
                    .bind(update.subscriptions.as_str())
                    .bind(rows::seq_param(update.started_after))
                    .bind(rows::seq_param(update.cursor))
                    .bind(update.opened_at.get())
                    .bind(update.seen_at.get())
                    .bind(update.closed_at.map(UnixMillis::get));
            })
            .sql(
                " ON CONFLICT (agent_id, stream_id) DO UPDATE SET \
                 subscriptions = excluded.subscriptions, \
                 started_seq = CASE WHEN agent_stream_cursors.started_seq < excluded.started_seq \
                 THEN excluded.started_seq ELSE agent_stream_cursors.started_seq END, \
                 cursor_seq = CASE WHEN agent_stream_cursors.cursor_seq < excluded.cursor_seq \
                 THEN excluded.cursor_seq ELSE agent_stream_cursors.cursor_seq END, \
                 updated_at = CASE WHEN agent_stream_cursors.updated_at < excluded.updated_at \
                 THEN excluded.updated_at ELSE agent_stream_cursors.updated_at END, \
                 closed_at = COALESCE(agent_stream_cursors.closed_at, excluded.closed_at)",
            );
        })
        .execute(conn)
        .await?;
    }

    let mut closing_agents: Vec<i64> = updates
        .iter()
        .filter(|u| u.closed_at.is_some())
        .map(|u| u.agent.0)
        .collect();
    closing_agents.sort_unstable();
    closing_agents.dedup();
    let mut seen: Vec<(i64, i64)> = updates
        .iter()
        .map(|u| (u.agent.0, u.seen_at.get()))
        .collect();
    // Each agent once, with the latest time one of its streams was seen.
    seen.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
    seen.dedup_by_key(|(agent, _)| *agent);
    for chunk in seen.chunks(ROWS_PER_PART) {
        let agents: Vec<i64> = chunk.iter().map(|(agent, _)| *agent).collect();
        Single::new(dialect, |part| {
            part.sql("DELETE FROM agent_stream_cursors WHERE agent_id IN (")
                .list(agents.iter().copied())
                .sql(") AND COALESCE(closed_at, CASE WHEN updated_at < ")
                .bind(stale_before.get())
                .sql(
                    " THEN updated_at END) IS NOT NULL \
                     AND EXISTS (SELECT 1 FROM agent_stream_cursors later \
                     WHERE later.agent_id = agent_stream_cursors.agent_id \
                     AND later.stream_id <> agent_stream_cursors.stream_id \
                     AND later.subscriptions = agent_stream_cursors.subscriptions \
                     AND later.opened_at > COALESCE(agent_stream_cursors.closed_at, \
                     agent_stream_cursors.updated_at) \
                     AND later.started_seq <= agent_stream_cursors.cursor_seq \
                     AND later.cursor_seq >= agent_stream_cursors.cursor_seq)",
                );
        })
        .execute(conn)
        .await?;

        // Bound the holds: an agent whose streams keep closing with other subscriptions
        // (a flapping, misconfigured fleet sharing one token) keeps the newest ones. Only a
        // close adds a hold, so only agents with a stream closing in this save are looked
        // at, through the key (an `agent_id` on the outer statement too: without it SQLite
        // scanned every stream of every agent once per chunk).
        let closing: Vec<i64> = agents
            .iter()
            .copied()
            .filter(|agent| closing_agents.binary_search(agent).is_ok())
            .collect();
        if !closing.is_empty() {
            prune_holds(conn, &closing).await?;
        }

        // VALUES columns are column1, column2 on both databases.
        Single::new(dialect, |part| {
            part.sql(
                "UPDATE agents SET \
                 cursor_seq = COALESCE((SELECT MIN(c.cursor_seq) FROM agent_stream_cursors c \
                 WHERE c.agent_id = agents.id), agents.cursor_seq), \
                 last_seen_at = CASE WHEN last_seen_at IS NULL OR last_seen_at < v.column2 \
                 THEN v.column2 ELSE last_seen_at END \
                 FROM (VALUES ",
            )
            .rows(chunk, |row, (agent, seen_at)| {
                row.bind(*agent).bind(*seen_at);
            })
            .sql(") AS v WHERE agents.id = v.column1");
        })
        .execute(conn)
        .await?;
    }
    Ok(())
}

/// Releases the oldest closed streams' holds of `agents` beyond [`MAX_HOLDS_PER_AGENT`].
async fn prune_holds(conn: &mut AnyConnection, agents: &[i64]) -> Result<(), StoreError> {
    let pruned = Single::new(Dialect::of(conn), |part| {
        part.sql("DELETE FROM agent_stream_cursors WHERE agent_id IN (")
            .list(agents.iter().copied())
            .sql(
                ") AND closed_at IS NOT NULL \
                 AND stream_id IN (SELECT stream_id FROM (SELECT stream_id, ROW_NUMBER() OVER \
                 (PARTITION BY agent_id ORDER BY closed_at DESC) AS newest \
                 FROM agent_stream_cursors WHERE closed_at IS NOT NULL AND agent_id IN (",
            )
            .list(agents.iter().copied())
            .sql(&format!(
                ")) AS ranked WHERE newest > {MAX_HOLDS_PER_AGENT})"
            ));
    })
    .execute(conn)
    .await?;
    if pruned > 0 {
        tracing::warn!(
            pruned,
            max = MAX_HOLDS_PER_AGENT,
            "an agent had more closed streams holding its cursor than kept; the oldest were released (their events may not be redelivered to those streams' subscriptions)"
        );
    }
    Ok(())
}

/// Replaces one agent's receiver health report.
pub(super) async fn save_receiver_health(
    conn: &mut AnyConnection,
    agent: AgentId,
    health: &ReceiverHealth,
) -> Result<(), StoreError> {
    health
        .validate()
        .map_err(|e| StoreError::Invalid(InvalidRequest::ReceiverHealth(e)))?;
    save_report(
        conn,
        agent,
        "UPDATE agents SET receiver_health = $1 WHERE id = $2",
        health,
    )
    .await
}

/// Writes one of an agent's JSON report columns (`update` binds the JSON, then the id).
async fn save_report(
    conn: &mut AnyConnection,
    agent: AgentId,
    update: &'static str,
    report: &impl serde::Serialize,
) -> Result<(), StoreError> {
    let updated = sqlx::query(update)
        .bind(rows::to_json(report))
        .bind(agent.0)
        .execute(&mut *conn)
        .await?;
    if updated.rows_affected() == 0 {
        return Err(StoreError::NotFound(MissingEntity::AgentWithId(agent)));
    }
    Ok(())
}

/// Replaces one agent's subscription status report.
pub(super) async fn save_subscription_status(
    conn: &mut AnyConnection,
    agent: AgentId,
    report: &SubscriptionReport,
) -> Result<(), StoreError> {
    report
        .validate()
        .map_err(|e| StoreError::Invalid(InvalidRequest::SubscriptionStatus(e)))?;
    save_report(
        conn,
        agent,
        "UPDATE agents SET subscription_status = $1 WHERE id = $2",
        report,
    )
    .await
}
