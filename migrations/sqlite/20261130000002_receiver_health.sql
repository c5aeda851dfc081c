-- The receivers an agent last reported as failing (JSON: {"reported_at", "failing": [...]}),
-- written when a report arrives; NULL until the agent's first report. Nullable, so the
-- previous release keeps working on this schema.
ALTER TABLE agents ADD COLUMN receiver_health TEXT;
