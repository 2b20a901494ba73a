"""The node-to-node wire protocol, without I/O: frames, messages, the link state machine.

This package never imports trio or zeroconf (tests/test_layering.py checks it).
"""
