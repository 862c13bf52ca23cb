"""Test infrastructure: the stack test, the Jenkins stand-in, PromQL checks, helpers the tests share."""
