"""Make the audit log append-only in the database itself, not only in Python.

Row-level UPDATE and DELETE are refused. TRUNCATE is left alone: test databases are reset with
it, and whoever may TRUNCATE may also drop triggers.
"""

from django.db import migrations

FORWARD = """
CREATE OR REPLACE FUNCTION portal_refuse_audit_change() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'portal_auditevent is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER portal_auditevent_append_only
    BEFORE UPDATE OR DELETE ON portal_auditevent
    FOR EACH ROW EXECUTE FUNCTION portal_refuse_audit_change();
"""

BACKWARD = """
DROP TRIGGER IF EXISTS portal_auditevent_append_only ON portal_auditevent;
DROP FUNCTION IF EXISTS portal_refuse_audit_change();
"""


class Migration(migrations.Migration):
    dependencies = [("portal", "0001_initial")]

    operations = [migrations.RunSQL(FORWARD, BACKWARD)]
