"""Web pages of the metadata app: projects, the sheet, import/export, entity pages and labels."""
