"""Test harness of mlflowops.maintenance: real services, data generation, and an Ansible runner."""
