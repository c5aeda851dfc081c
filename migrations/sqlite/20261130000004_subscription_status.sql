-- The agent's latest subscriptions with whether each can match a push and why not (JSON:
-- {"reported_at", "subscriptions": [{"project", "ref_pattern", "state", "reason",
-- "project_path"}]}), written by the broker when a stream opens or its subscriptions or
-- their status change; NULL until then. Nullable, so the previous release keeps working
-- on this schema.
ALTER TABLE agents ADD COLUMN subscription_status TEXT;
