"""Where an agent's work lives: the user's repository, the task's isolated
checkout, and the plumbing that lands or keeps a result (all git goes through here)."""
