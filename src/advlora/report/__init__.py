"""Reporting: tables in the terminal and in markdown, run reports and plots."""
