"""Fault injection against the devstack (`make soak`); see faults.py."""
