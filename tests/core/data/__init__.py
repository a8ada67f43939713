"""Tests of rkdsc_core.data."""
