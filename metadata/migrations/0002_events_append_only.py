"""Make metadata events append-only in the database itself.

DELETE is refused. UPDATE is refused except for the one allowed change, a redaction: the
transaction must have set `metadata.redaction` to `on` (the redaction service does, and writes a
tombstone event and an audit event with it), and the row may change only from a value to no
value with `redacted` set. TRUNCATE is left alone: test databases are reset with it, and whoever
may TRUNCATE may also drop triggers.
"""

from django.db import migrations

FORWARD = """
CREATE OR REPLACE FUNCTION metadata_guard_event() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'UPDATE'
       AND coalesce(current_setting('metadata.redaction', true), '') = 'on'
       AND NEW.value IS NULL AND NEW.redacted AND NOT OLD.redacted
       AND (NEW.id, NEW.project_id, NEW.entity_id, NEW.property_id, NEW.kind, NEW.target_id,
            NEW.author_id, NEW.timestamp, NEW.batch, NEW.comment)
           IS NOT DISTINCT FROM
           (OLD.id, OLD.project_id, OLD.entity_id, OLD.property_id, OLD.kind, OLD.target_id,
            OLD.author_id, OLD.timestamp, OLD.batch, OLD.comment)
    THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'metadata_event is append-only: % refused (a correction is a new event)', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER metadata_event_append_only
    BEFORE UPDATE OR DELETE ON metadata_event
    FOR EACH ROW EXECUTE FUNCTION metadata_guard_event();
"""

BACKWARD = """
DROP TRIGGER IF EXISTS metadata_event_append_only ON metadata_event;
DROP FUNCTION IF EXISTS metadata_guard_event();
"""


class Migration(migrations.Migration):
    dependencies = [("metadata", "0001_initial")]

    operations = [migrations.RunSQL(FORWARD, BACKWARD)]
