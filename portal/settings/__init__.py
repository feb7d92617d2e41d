"""Settings split by environment: `dev` (default for manage.py), `test`, `production`.

Every value comes from an environment variable read in `base`; the split modules only change
defaults. Each variable is documented in docs/operations.md (a test keeps the two in step).
"""
