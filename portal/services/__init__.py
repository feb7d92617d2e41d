"""Business logic of the core app; views and tasks stay thin and call these."""
