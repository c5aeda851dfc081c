-- fluxgate schema, SQLite flavour. Keep in step with ../postgres/ (same tables, same
-- columns, same meaning); see ../README.md for the rules.

-- The log's counters: head_seq is the last seq assigned, floor_seq the last seq removed by
-- retention. Every write transaction updates this row first, which serialises writers and
-- makes seq order equal commit order.
CREATE TABLE log_state (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    head_seq INTEGER NOT NULL,
    floor_seq INTEGER NOT NULL
);
INSERT INTO log_state (id, head_seq, floor_seq) VALUES (1, 0, 0);

CREATE TABLE log_entries (
    seq INTEGER PRIMARY KEY,
    recorded_at INTEGER NOT NULL,
    kind TEXT NOT NULL,
    project_id INTEGER,
    body TEXT NOT NULL
);
CREATE INDEX log_entries_recorded_at ON log_entries (recorded_at);

CREATE TABLE projects (
    id INTEGER PRIMARY KEY,
    path TEXT NOT NULL,
    path_key TEXT NOT NULL,
    visibility TEXT
);
CREATE INDEX projects_path_key ON projects (path_key);

-- Every path a project has had; the latest project to take a path owns it.
CREATE TABLE project_aliases (
    path_key TEXT PRIMARY KEY,
    path TEXT NOT NULL,
    project_id INTEGER NOT NULL
);
CREATE INDEX project_aliases_project_id ON project_aliases (project_id);

CREATE TABLE agents (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    config_project TEXT NOT NULL,
    grants TEXT NOT NULL,
    allow_internal INTEGER NOT NULL,
    token_digest TEXT NOT NULL UNIQUE,
    token_generation INTEGER NOT NULL,
    cursor_seq INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    last_seen_at INTEGER
);

CREATE TABLE idempotency_keys (
    key TEXT PRIMARY KEY,
    seqs TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX idempotency_keys_created_at ON idempotency_keys (created_at);

-- The last change seen for each (project, ref), for content-based dedup.
CREATE TABLE ref_heads (
    project_id INTEGER NOT NULL,
    ref TEXT NOT NULL,
    before_sha TEXT NOT NULL,
    after_sha TEXT NOT NULL,
    seq INTEGER NOT NULL,
    received_at INTEGER NOT NULL,
    PRIMARY KEY (project_id, ref)
);
CREATE INDEX ref_heads_received_at ON ref_heads (received_at);
