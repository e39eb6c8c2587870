"""Helpers the tests share: fixtures, fault injection, real-service support, node processes."""
