"""Jobs keep the points of the series they report (loss and accuracy per epoch, for example)."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("portal", "0003_apitoken"),
    ]

    operations = [
        migrations.AddField(
            model_name="job",
            name="metrics",
            field=models.JSONField(
                blank=True,
                default=list,
                help_text="Points of the series the job reports, oldest first (e.g. loss and accuracy per epoch).",
            ),
        ),
    ]
