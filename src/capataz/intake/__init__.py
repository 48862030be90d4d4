"""Tasks entering the queue: files of many tasks (plan.yaml), validation."""
