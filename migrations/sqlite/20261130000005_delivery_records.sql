-- What happened to each event at each agent (fluxgate trace): one row per stage reached,
-- per object (`acked` and `sent` have none; the sync stages name the Flux source or
-- workload). Written in batches off the ingest path; removed with their log entries.
CREATE TABLE delivery_records (
    seq BIGINT NOT NULL,
    agent_id BIGINT NOT NULL,
    stage TEXT NOT NULL,
    object TEXT NOT NULL,
    at BIGINT NOT NULL,
    -- JSON: DeliveryDetail (sent_at, handling_ms, receivers, replica, revision, message,
    -- observed_at).
    detail TEXT NOT NULL,
    PRIMARY KEY (seq, agent_id, stage, object)
);
