-- Each agent stream's cursor, so that one stream cannot move its agent's cursor past an
-- event another stream of the same agent still holds unacked. The agent's cursor
-- (agents.cursor_seq) is the lowest of these. A closed stream's row stays as a hold until
-- a later stream of the agent with the same subscriptions, started at or below it, has
-- moved past it.
CREATE TABLE agent_stream_cursors (
    agent_id INTEGER NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
    stream_id TEXT NOT NULL,
    -- Digest of the subscriptions the stream opened with: only a later stream with the
    -- same ones takes over a closed stream's hold.
    subscriptions TEXT NOT NULL,
    started_seq INTEGER NOT NULL,
    cursor_seq INTEGER NOT NULL,
    opened_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    closed_at INTEGER,
    PRIMARY KEY (agent_id, stream_id)
);
